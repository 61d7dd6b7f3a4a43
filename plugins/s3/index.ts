import { Readable } from 'node:stream'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import {
  DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, S3Client, type S3ClientConfig
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import {
  assertSafeKey, EVS_ERR_CONNECTION_NOT_FOUND, markPermanent, Type, writeAndDeleteProbe,
  type ConnectionContext, type ObjectConnection, type ObjectInfo, type PutOptions, type Static
} from '../../core/plugin-api.js'
import { checkPrefix, joinPrefix } from '../object-store-prefix.js'
import { ConnectTimeoutS, connectTimeout, IdleTimeoutS, idleTimeout } from '../object-store-timeouts.js'

const Checksum = Type.Union([Type.Literal('WHEN_SUPPORTED'), Type.Literal('WHEN_REQUIRED')], { default: 'WHEN_SUPPORTED' })

export const S3OptionsSchema = Type.Object({
  bucket: Type.String({ minLength: 3 }),
  prefix: Type.String({ default: '', description: 'key prefix inside the bucket, e.g. "audit/"' }),
  region: Type.Optional(Type.String({ minLength: 1, description: 'default: AWS_REGION, the shared config, or us-east-1' })),
  endpoint: Type.Optional(Type.String({ minLength: 1, description: 'for S3-compatible stores (MinIO, Ceph...)' })),
  forcePathStyle: Type.Boolean({ default: false }),
  accessKeyId: Type.Optional(Type.String({ minLength: 1 })),
  secretAccessKey: Type.Optional(Type.String({ minLength: 1 })),
  sessionToken: Type.Optional(Type.String({ minLength: 1 })),
  requestChecksumCalculation: Checksum,
  responseChecksumValidation: Checksum,
  partSizeBytes: Type.Integer({ default: 8 * 1024 * 1024, minimum: 5 * 1024 * 1024 }),
  uploadConcurrency: Type.Integer({ default: 2, minimum: 1, maximum: 16 }),
  storageClass: Type.Optional(Type.String({ minLength: 1 })),
  serverSideEncryption: Type.Optional(Type.Union([Type.Literal('AES256'), Type.Literal('aws:kms'), Type.Literal('aws:kms:dsse')])),
  sseKmsKeyId: Type.Optional(Type.String({ minLength: 1 })),
  uploadChecksum: Type.Union([Type.Literal('SHA256'), Type.Literal('none')], { default: 'SHA256', description: 'checksum S3 checks on each upload' }),
  objectLock: Type.Optional(Type.Object({
    mode: Type.Union([Type.Literal('GOVERNANCE'), Type.Literal('COMPLIANCE')]),
    days: Type.Integer({ minimum: 1, description: 'each object is locked until this many days after its upload' })
  }, { additionalProperties: false, description: 'S3 Object Lock retention for every data file and digest record (the bucket must have Object Lock enabled)' })),
  connectTimeoutS: ConnectTimeoutS,
  idleTimeoutS: IdleTimeoutS
}, { additionalProperties: false })

export type S3Options = Static<typeof S3OptionsSchema>

// Errors that retrying cannot fix: the file is kept aside rather than retried forever.
const PERMANENT_NAMES = new Set([
  'AccessDenied', 'AllAccessDisabled', 'NoSuchBucket', 'InvalidBucketName', 'InvalidAccessKeyId',
  'SignatureDoesNotMatch', 'AccountProblem', 'InvalidObjectState', 'KMS.DisabledException', 'KMS.NotFoundException'
])

function classify (err: unknown, connection: string, o: S3Options): never {
  const e = err as Error & { $metadata?: { httpStatusCode?: number }, name: string }
  // The SDK's own timeouts (see requestHandler below), named as on every store.
  if (e.name === 'TimeoutError' && e.message.includes('did not establish a connection')) throw connectTimeout(connection, o.connectTimeoutS)
  if (e.name === 'TimeoutError' && e.message.includes('of inactivity')) throw idleTimeout(connection, o.idleTimeoutS)
  const status = e.$metadata?.httpStatusCode
  if (PERMANENT_NAMES.has(e.name) || status === 403 || (status === 404 && e.name !== 'NoSuchKey')) throw markPermanent(e)
  throw e
}

export class S3Connection implements ObjectConnection {
  readonly type = 's3'
  readonly name: string
  readonly capabilities = { append: false, checksums: ['sha256'] } as const
  readonly #options: S3Options
  readonly #prefix: string
  #client: S3Client | undefined

  constructor (options: S3Options, context: Pick<ConnectionContext, 'name'>) {
    this.name = context.name
    this.#options = options
    this.#prefix = joinPrefix(options.prefix)
  }

  // Created on first use: constructing the connection makes no call and reads no credentials.
  get #s3 (): S3Client {
    if (this.#client === undefined) {
      const o = this.#options
      const config: S3ClientConfig = {
        region: o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        forcePathStyle: o.forcePathStyle,
        requestChecksumCalculation: o.requestChecksumCalculation,
        responseChecksumValidation: o.responseChecksumValidation,
        // Without them a store that accepts connections and never answers holds a request forever.
        // socketTimeout is an idle timeout: a large part that keeps moving is never cut.
        requestHandler: { connectionTimeout: o.connectTimeoutS * 1000, socketTimeout: o.idleTimeoutS * 1000 }
      }
      if (o.endpoint !== undefined) config.endpoint = o.endpoint
      // Without static keys the SDK's default chain applies: env, shared profile, SSO, web identity, container and instance roles.
      if (o.accessKeyId !== undefined && o.secretAccessKey !== undefined) {
        config.credentials = { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, ...(o.sessionToken !== undefined ? { sessionToken: o.sessionToken } : {}) }
      }
      this.#client = new S3Client(config)
    }
    return this.#client
  }

  #key (key: string): string {
    assertSafeKey(this.name, key)
    return this.#prefix + key
  }

  async put (key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const o = this.#options
    const size = Buffer.isBuffer(body) ? body.length : options.size
    const checksum = options.checksum !== undefined && o.uploadChecksum === 'SHA256'
    // One request (smaller than a part): S3 checks the whole object against a SHA-256 given
    // beforehand. Multipart: the SDK sends each part's SHA-256, which S3 checks part by part.
    const whole = checksum && options.checksum?.sha256 !== undefined && size !== undefined && size < o.partSizeBytes
    const upload = new Upload({
      client: this.#s3,
      queueSize: o.uploadConcurrency,
      partSize: o.partSizeBytes,
      leavePartsOnError: false,
      params: {
        Bucket: o.bucket,
        Key: this.#key(key),
        Body: body,
        ...(options.contentType !== undefined ? { ContentType: options.contentType } : {}),
        ...(o.storageClass !== undefined ? { StorageClass: o.storageClass as never } : {}),
        ...(o.serverSideEncryption !== undefined ? { ServerSideEncryption: o.serverSideEncryption } : {}),
        ...(o.sseKmsKeyId !== undefined ? { SSEKMSKeyId: o.sseKmsKeyId } : {}),
        ...(checksum ? { ChecksumAlgorithm: 'SHA256' as const } : {}),
        ...(whole ? { ChecksumSHA256: Buffer.from(options.checksum?.sha256 as string, 'hex').toString('base64') } : {}),
        ...(options.retain === true && o.objectLock !== undefined
          ? { ObjectLockMode: o.objectLock.mode, ObjectLockRetainUntilDate: new Date(Date.now() + o.objectLock.days * 86_400_000) }
          : {})
      }
    })
    const onAbort = (): void => { void upload.abort() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    // A body stream that fails must fail the upload, not leave it waiting.
    const bodyError = new Promise<never>((_resolve, reject) => {
      if (!Buffer.isBuffer(body)) body.once('error', (err) => { void upload.abort(); reject(err) })
    })
    bodyError.catch(() => {})
    try {
      await Promise.race([upload.done(), bodyError])
    } catch (err) {
      classify(err, this.name, this.#options)
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
    }
  }

  async read (key: string): Promise<Readable> {
    try {
      const res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }))
      return res.Body as Readable
    } catch (err) {
      if ((err as Error).name === 'NoSuchKey' || (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) {
        throw new EVS_ERR_CONNECTION_NOT_FOUND(this.name, key)
      }
      classify(err, this.name, this.#options)
    }
  }

  async * list (prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined
    do {
      const res = await this.#s3.send(new ListObjectsV2Command({
        Bucket: this.#options.bucket,
        Prefix: this.#prefix + prefix,
        ...(token !== undefined ? { ContinuationToken: token } : {})
      })).catch((err: unknown) => classify(err, this.name, this.#options))
      for (const item of res.Contents ?? []) {
        if (item.Key === undefined) continue
        yield { key: item.Key.slice(this.#prefix.length), size: item.Size ?? 0 }
      }
      token = res.IsTruncated === true ? res.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  async * listFolders (folder: string): AsyncIterable<string> {
    const prefix = this.#prefix + folder
    let token: string | undefined
    do {
      const res = await this.#s3.send(new ListObjectsV2Command({
        Bucket: this.#options.bucket,
        Prefix: prefix,
        Delimiter: '/',
        ...(token !== undefined ? { ContinuationToken: token } : {})
      })).catch((err: unknown) => classify(err, this.name, this.#options))
      for (const item of res.CommonPrefixes ?? []) {
        if (item.Prefix !== undefined) yield item.Prefix.slice(prefix.length, -1)
      }
      token = res.IsTruncated === true ? res.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  async delete (key: string): Promise<void> {
    await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) })).catch((err: unknown) => classify(err, this.name, this.#options))
  }

  async check (): Promise<void> {
    await writeAndDeleteProbe(this)
  }

  async close (): Promise<void> {
    this.#client?.destroy()
    this.#client = undefined
  }
}

async function s3Connection (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerConnectionType({
    type: 's3',
    schema: S3OptionsSchema,
    check: (options: S3Options) => [
      ...checkPrefix(options.prefix),
      ...((options.accessKeyId === undefined) !== (options.secretAccessKey === undefined)
        ? [{ path: options.accessKeyId === undefined ? '/accessKeyId' : '/secretAccessKey', message: 'expected accessKeyId and secretAccessKey together (or neither, for the SDK default credential chain)' }]
        : []),
      // S3 refuses uploads with Object Lock parameters that carry no checksum.
      ...(options.objectLock !== undefined && options.uploadChecksum === 'none'
        ? [{ path: '/uploadChecksum', message: 'expected "SHA256" with objectLock: S3 requires a checksum on uploads with a retention period' }]
        : [])
    ],
    create: (options: S3Options, context) => new S3Connection(options, context)
  })
}

export default fp(s3Connection, {
  fastify: '5.x',
  name: 'dss-event-server-s3',
  dependencies: ['dss-event-server-types']
})
