import { resolve } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Storage, type Bucket, type StorageOptions } from '@google-cloud/storage'
import {
  assertSafeKey, EVS_ERR_CONNECTION_NOT_FOUND, markPermanent, Type, writeAndDeleteProbe,
  type ConnectionContext, type ObjectConnection, type ObjectInfo, type PutOptions, type SettingsProblem, type Static
} from '../../core/plugin-api.js'
import { checkPrefix, joinPrefix } from '../object-store-prefix.js'
import { IdleTimeoutS, progressWatchdog } from '../object-store-timeouts.js'

export const GcsOptionsSchema = Type.Object({
  bucket: Type.String({ minLength: 3 }),
  prefix: Type.String({ default: '', description: 'object name prefix inside the bucket, e.g. "audit/"' }),
  projectId: Type.Optional(Type.String({ minLength: 1 })),
  keyFilename: Type.Optional(Type.String({ minLength: 1, description: 'service account key file; relative to the settings file folder' })),
  credentials: Type.Optional(Type.String({ minLength: 2, description: 'service account key JSON, e.g. "${GCS_CREDENTIALS_JSON}"' })),
  apiEndpoint: Type.Optional(Type.String({ minLength: 1, description: 'for emulators or private endpoints' })),
  uploadMode: Type.Union([Type.Literal('resumable'), Type.Literal('simple')], { default: 'resumable' }),
  idleTimeoutS: IdleTimeoutS
}, { additionalProperties: false })

export type GcsOptions = Static<typeof GcsOptionsSchema>

function status (err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code
  return typeof code === 'number' ? code : undefined
}

/** Marks errors that retrying cannot fix (auth refused, bucket missing, bad request) as permanent. */
export function classifyGcsError (err: unknown): Error {
  const code = status(err)
  if (code === 400 || code === 401 || code === 403 || code === 404) return markPermanent(err as Error)
  return err as Error
}

function classify (err: unknown): never {
  throw classifyGcsError(err)
}

export class GcsConnection implements ObjectConnection {
  readonly type = 'gcs'
  readonly name: string
  readonly capabilities = { append: false, checksums: ['md5'] } as const
  readonly #options: GcsOptions
  readonly #baseDir: string
  readonly #prefix: string
  #storage: Storage | undefined

  constructor (options: GcsOptions, context: Pick<ConnectionContext, 'name' | 'baseDir'>) {
    this.name = context.name
    this.#options = options
    this.#baseDir = context.baseDir
    this.#prefix = joinPrefix(options.prefix)
  }

  // Created on first use: constructing the connection makes no call and reads no credentials.
  get #bucket (): Bucket {
    if (this.#storage === undefined) {
      const o = this.#options
      // Without keyFilename or credentials, Application Default Credentials apply
      // (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server...).
      const config: StorageOptions = {}
      if (o.projectId !== undefined) config.projectId = o.projectId
      if (o.apiEndpoint !== undefined) config.apiEndpoint = o.apiEndpoint
      if (o.keyFilename !== undefined) config.keyFilename = resolve(this.#baseDir, o.keyFilename)
      if (o.credentials !== undefined) config.credentials = JSON.parse(o.credentials) as StorageOptions['credentials']
      this.#storage = new Storage(config)
      // Without a `timeout` the SDK's JSON API calls (list, metadata, delete) wait forever for a
      // store that never answers. Set per request, not on Storage: there it would also cap a simple
      // upload as a whole, which the progress watchdog in put() bounds instead.
      const timeout = o.idleTimeoutS * 1000
      this.#storage.interceptors.push({
        request: (reqOpts) => {
          const uri = (reqOpts as { uri?: unknown }).uri
          return (typeof uri === 'string' && !uri.includes('/upload/') ? { ...reqOpts, timeout } : reqOpts) as typeof reqOpts & { uri: string }
        }
      })
    }
    return this.#storage.bucket(this.#options.bucket)
  }

  #name (key: string): string {
    assertSafeKey(this.name, key)
    return this.#prefix + key
  }

  async put (key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const file = this.#bucket.file(this.#name(key))
    // One request either way (no chunked resumable sessions): the object appears whole or not at all.
    const stream = file.createWriteStream({
      resumable: this.#options.uploadMode === 'resumable',
      // The SDK compares the CRC32C of what it sent with what the store computed, and deletes
      // the object on a mismatch; an MD5 given beforehand is checked by the store itself.
      validation: 'crc32c',
      metadata: {
        ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
        ...(options.checksum?.md5 !== undefined ? { md5Hash: options.checksum.md5 } : {})
      }
    })
    // The SDK's own request timeout does not cover a streamed upload: a store that stops
    // answering would hold it forever.
    const watchdog = progressWatchdog(this.name, this.#options.idleTimeoutS, options.signal)
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, watchdog.progress, stream, { signal: watchdog.signal })
    } catch (err) {
      // Timed out, not stopped by the caller: say so rather than "The operation was aborted".
      if (watchdog.signal.aborted && options.signal?.aborted !== true) throw watchdog.signal.reason
      classify(err)
    } finally {
      watchdog.stop()
    }
  }

  async read (key: string): Promise<Readable> {
    const file = this.#bucket.file(this.#name(key))
    try {
      await file.getMetadata()
    } catch (err) {
      if (status(err) === 404) throw new EVS_ERR_CONNECTION_NOT_FOUND(this.name, key)
      classify(err)
    }
    return file.createReadStream()
  }

  async * list (prefix: string): AsyncIterable<ObjectInfo> {
    let pageToken: string | undefined
    do {
      const [files, next] = await this.#bucket.getFiles({
        prefix: this.#prefix + prefix,
        autoPaginate: false,
        maxResults: 1000,
        ...(pageToken !== undefined ? { pageToken } : {})
      }).catch((err: unknown) => classify(err))
      for (const file of files) yield { key: file.name.slice(this.#prefix.length), size: Number(file.metadata.size ?? 0) }
      pageToken = (next as { pageToken?: string } | null | undefined)?.pageToken
    } while (pageToken !== undefined)
  }

  async * listFolders (folder: string): AsyncIterable<string> {
    const prefix = this.#prefix + folder
    let pageToken: string | undefined
    do {
      const [, next, response] = await this.#bucket.getFiles({
        prefix,
        delimiter: '/',
        autoPaginate: false,
        maxResults: 1000,
        ...(pageToken !== undefined ? { pageToken } : {})
      }).catch((err: unknown) => classify(err))
      for (const name of (response as { prefixes?: string[] } | undefined)?.prefixes ?? []) yield name.slice(prefix.length, -1)
      pageToken = (next as { pageToken?: string } | null | undefined)?.pageToken
    } while (pageToken !== undefined)
  }

  async delete (key: string): Promise<void> {
    await this.#bucket.file(this.#name(key)).delete({ ignoreNotFound: true }).catch((err: unknown) => classify(err))
  }

  async check (): Promise<void> {
    await writeAndDeleteProbe(this)
  }

  async close (): Promise<void> {
    this.#storage = undefined
  }
}

function checkGcs (o: GcsOptions): SettingsProblem[] {
  const problems = checkPrefix(o.prefix)
  if (o.credentials !== undefined) {
    try {
      JSON.parse(o.credentials)
    } catch {
      // Never echo it: it holds a private key.
      problems.push({ path: '/credentials', message: 'expected the JSON of a service account key' })
    }
  }
  if (o.credentials !== undefined && o.keyFilename !== undefined) {
    problems.push({ path: '/keyFilename', message: 'expected keyFilename or credentials, not both' })
  }
  return problems
}

async function gcsConnection (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerConnectionType({
    type: 'gcs',
    schema: GcsOptionsSchema,
    check: checkGcs,
    create: (options: GcsOptions, context) => new GcsConnection(options, context)
  })
}

export default fp(gcsConnection, {
  fastify: '5.x',
  name: 'dss-event-server-gcs',
  dependencies: ['dss-event-server-types']
})
