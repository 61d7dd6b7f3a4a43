import { createHash, randomBytes } from 'node:crypto'
import type { Agent } from 'node:http'
import { Readable } from 'node:stream'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { BlobServiceClient, StorageSharedKeyCredential, type BlobHTTPHeaders, type BlobImmutabilityPolicy, type BlockBlobClient, type ContainerClient, type StoragePipelineOptions } from '@azure/storage-blob'
import {
  assertSafeKey, EVS_ERR_CONNECTION_NOT_FOUND, markPermanent, Type, writeAndDeleteProbe,
  type ConnectionContext, type ObjectConnection, type ObjectInfo, type PutOptions, type SettingsProblem, type Static
} from '../../core/plugin-api.js'
import { checkPrefix, joinPrefix } from '../object-store-prefix.js'
import { ConnectTimeoutS, IdleTimeoutS, timedAgent } from '../object-store-timeouts.js'

export const AzureBlobOptionsSchema = Type.Object({
  container: Type.String({ minLength: 3, maxLength: 63 }),
  prefix: Type.String({ default: '', description: 'blob name prefix inside the container, e.g. "audit/"' }),
  connectionString: Type.Optional(Type.String({ minLength: 1 })),
  accountName: Type.Optional(Type.String({ minLength: 1 })),
  accountKey: Type.Optional(Type.String({ minLength: 1 })),
  sasToken: Type.Optional(Type.String({ minLength: 1 })),
  endpoint: Type.Optional(Type.String({ minLength: 1, description: 'blob service URL; default https://<accountName>.blob.core.windows.net' })),
  blockSizeBytes: Type.Integer({ default: 4 * 1024 * 1024, minimum: 64 * 1024, maximum: 100 * 1024 * 1024 }),
  uploadConcurrency: Type.Integer({ default: 2, minimum: 1, maximum: 16 }),
  immutability: Type.Optional(Type.Object({
    days: Type.Integer({ minimum: 1, description: 'each blob is immutable until this many days after its upload' }),
    mode: Type.Union([Type.Literal('Unlocked'), Type.Literal('Locked')], { default: 'Unlocked' })
  }, { additionalProperties: false, description: 'a version-level immutability policy on every data file and digest record (the container must have version-level immutability enabled)' })),
  connectTimeoutS: ConnectTimeoutS,
  idleTimeoutS: IdleTimeoutS
}, { additionalProperties: false })

export type AzureBlobOptions = Static<typeof AzureBlobOptionsSchema>

// Errors that retrying cannot fix: the file is kept aside rather than retried forever.
const PERMANENT_CODES = new Set([
  'ContainerNotFound', 'ContainerBeingDeleted', 'ContainerDisabled', 'AuthorizationFailure', 'AuthenticationFailed',
  'AuthorizationPermissionMismatch', 'AuthorizationResourceTypeMismatch', 'InvalidAuthenticationInfo', 'AccountIsDisabled', 'InsufficientAccountPermissions'
])

function classify (err: unknown): never {
  const e = err as Error & { code?: string, statusCode?: number }
  if ((e.code !== undefined && PERMANENT_CODES.has(e.code)) || e.statusCode === 403 || e.statusCode === 401) throw markPermanent(e)
  throw e
}

// The uploader retries forever with its own backoff: the SDK's retries only need to ride out a
// blip, not to hold an upload for a minute (its default) while the store is down.
const RETRY_OPTIONS = { maxTries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4000 }

// Put Blob takes at most 5000 MiB at once; past one block, blocks are staged and committed.
const MAX_BLOCKS = 50_000

function serviceUrl (o: AzureBlobOptions): string {
  return (o.endpoint ?? `https://${o.accountName as string}.blob.core.windows.net`).replace(/\/+$/, '')
}

export class AzureBlobConnection implements ObjectConnection {
  readonly type = 'azure-blob'
  readonly name: string
  readonly capabilities = { append: false } as const
  readonly #options: AzureBlobOptions
  readonly #prefix: string
  #container: Promise<ContainerClient> | undefined
  #agent: Agent | undefined

  constructor (options: AzureBlobOptions, context: Pick<ConnectionContext, 'name'>) {
    this.name = context.name
    this.#options = options
    this.#prefix = joinPrefix(options.prefix)
  }

  // Created on first use: constructing the connection makes no call and reads no credentials.
  async #client (): Promise<ContainerClient> {
    this.#container ??= (async () => {
      const o = this.#options
      // The SDK sets no client-side timeout: its sockets come from an agent that has them. The
      // agent must match the service URL's protocol, known only once the client exists.
      const pipeline = (url: string): StoragePipelineOptions => {
        this.#agent ??= timedAgent(new URL(url).protocol, this.name, o)
        // `agent` is a core-rest-pipeline option the storage pipeline passes through as it is.
        return { retryOptions: RETRY_OPTIONS, agent: this.#agent } as StoragePipelineOptions & { agent: Agent }
      }
      let service: BlobServiceClient
      if (o.connectionString !== undefined) {
        service = BlobServiceClient.fromConnectionString(o.connectionString, pipeline(BlobServiceClient.fromConnectionString(o.connectionString).url))
      } else if (o.accountKey !== undefined) {
        service = new BlobServiceClient(serviceUrl(o), new StorageSharedKeyCredential(o.accountName as string, o.accountKey), pipeline(serviceUrl(o)))
      } else if (o.sasToken !== undefined) {
        service = new BlobServiceClient(`${serviceUrl(o)}?${o.sasToken.replace(/^\?/, '')}`, undefined, pipeline(serviceUrl(o)))
      } else {
        // Microsoft Entra ID: environment, workload identity, managed identity, Azure CLI...
        // Imported only for this mode, so the other modes never load @azure/identity.
        const { DefaultAzureCredential } = await import('@azure/identity')
        service = new BlobServiceClient(serviceUrl(o), new DefaultAzureCredential(), pipeline(serviceUrl(o)))
      }
      return service.getContainerClient(o.container)
    })()
    return await this.#container
  }

  #name (key: string): string {
    assertSafeKey(this.name, key)
    return this.#prefix + key
  }

  async put (key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const blob = (await this.#client()).getBlockBlobClient(this.#name(key))
    const common = {
      blobHTTPHeaders: {
        ...(options.contentType !== undefined ? { blobContentType: options.contentType } : {})
      },
      ...(options.signal !== undefined ? { abortSignal: options.signal } : {})
    }
    const o = this.#options
    const immutabilityPolicy = options.retain === true && o.immutability !== undefined
      ? { expiriesOn: new Date(Date.now() + o.immutability.days * 86_400_000), policyMode: o.immutability.mode }
      : undefined
    const retained = { ...common, ...(immutabilityPolicy !== undefined ? { immutabilityPolicy } : {}) }
    try {
      if (options.checksum !== undefined) {
        // Azure checks each block against its MD5 (Put Block): a corrupted upload is refused.
        await this.#putStream(blob, Buffer.isBuffer(body) ? Readable.from([body]) : body, retained, { md5: options.checksum.md5 })
      } else if (Buffer.isBuffer(body)) await blob.upload(body, body.length, retained)
      else await this.#putStream(blob, body, retained)
    } catch (err) {
      classify(err)
    }
  }

  /**
   * One Put Blob when the stream fits in one block; else staged blocks committed at the end, so
   * an upload that fails or is aborted leaves the previous blob as it was. Blocks are staged here
   * rather than by `uploadStream`, which does not pass the abort signal on to them nor a checksum.
   * `checked`: every block is staged with its MD5, which Azure checks (a corrupted block is
   * refused), even a stream that fits in one; the blob is committed with the MD5 of the whole as
   * its Content-MD5, after comparing it with the one computed beforehand, if given.
   */
  async #putStream (blob: BlockBlobClient, body: Readable, common: { blobHTTPHeaders: BlobHTTPHeaders, abortSignal?: AbortSignal, immutabilityPolicy?: BlobImmutabilityPolicy }, checked?: { md5?: string | undefined }): Promise<void> {
    const { blockSizeBytes, uploadConcurrency } = this.#options
    const signal = common.abortSignal
    const idPrefix = randomBytes(12).toString('hex')
    const ids: string[] = []
    const staging = new Set<Promise<void>>()
    const failures: unknown[] = []
    const whole = checked !== undefined ? createHash('md5') : undefined
    const check = (): void => {
      if (failures.length > 0) throw failures[0]
      signal?.throwIfAborted()
    }
    const stage = (block: Buffer): void => {
      if (ids.length === MAX_BLOCKS) throw new Error(`the file needs more than ${MAX_BLOCKS} blocks: raise blockSizeBytes`)
      const id = Buffer.from(`${idPrefix}-${String(ids.length).padStart(6, '0')}`).toString('base64')
      ids.push(id)
      whole?.update(block)
      const done: Promise<void> = blob.stageBlock(id, block, block.length, {
        ...(signal !== undefined ? { abortSignal: signal } : {}),
        ...(checked !== undefined ? { transactionalContentMD5: createHash('md5').update(block).digest() } : {})
      })
        .then(() => {}, (err: unknown) => { failures.push(err) })
        .finally(() => staging.delete(done))
      staging.add(done)
    }
    let pending: Buffer[] = []
    let pendingBytes = 0
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        pending.push(chunk)
        pendingBytes += chunk.length
        // Strictly more than a block: a stream that fits in one block goes up in one request.
        while (pendingBytes > blockSizeBytes) {
          const all = Buffer.concat(pending, pendingBytes)
          stage(all.subarray(0, blockSizeBytes))
          pending = [all.subarray(blockSizeBytes)]
          pendingBytes -= blockSizeBytes
          while (staging.size >= uploadConcurrency) await Promise.race(staging)
          check()
        }
      }
    } finally {
      // Whatever happens, no block upload outlives this call.
      await Promise.all(staging)
    }
    check()
    const rest = Buffer.concat(pending, pendingBytes)
    if (ids.length === 0 && whole === undefined) {
      await blob.upload(rest, rest.length, common)
      return
    }
    if (rest.length > 0 || ids.length === 0) stage(rest)
    await Promise.all(staging)
    check()
    const md5 = whole?.digest()
    if (md5 !== undefined && checked?.md5 !== undefined && md5.toString('base64') !== checked.md5) {
      throw new Error('the bytes read for the upload do not match the MD5 computed beforehand; nothing was committed')
    }
    await blob.commitBlockList(ids, {
      ...common,
      blobHTTPHeaders: { ...common.blobHTTPHeaders, ...(md5 !== undefined ? { blobContentMD5: md5 } : {}) }
    })
  }

  async read (key: string): Promise<Readable> {
    const blob = (await this.#client()).getBlobClient(this.#name(key))
    try {
      const res = await blob.download()
      return res.readableStreamBody as Readable
    } catch (err) {
      const e = err as { statusCode?: number, code?: string }
      if (e.statusCode === 404 && e.code !== 'ContainerNotFound') throw new EVS_ERR_CONNECTION_NOT_FOUND(this.name, key)
      classify(err)
    }
  }

  async * list (prefix: string): AsyncIterable<ObjectInfo> {
    const container = await this.#client()
    try {
      for await (const item of container.listBlobsFlat({ prefix: this.#prefix + prefix })) {
        yield { key: item.name.slice(this.#prefix.length), size: item.properties.contentLength ?? 0 }
      }
    } catch (err) {
      classify(err)
    }
  }

  async * listFolders (folder: string): AsyncIterable<string> {
    const container = await this.#client()
    const prefix = this.#prefix + folder
    try {
      for await (const item of container.listBlobsByHierarchy('/', { prefix })) {
        if (item.kind === 'prefix') yield item.name.slice(prefix.length, -1)
      }
    } catch (err) {
      classify(err)
    }
  }

  async delete (key: string): Promise<void> {
    const blob = (await this.#client()).getBlobClient(this.#name(key))
    await blob.deleteIfExists().catch(classify)
  }

  async check (): Promise<void> {
    await writeAndDeleteProbe(this)
  }

  async close (): Promise<void> {
    this.#container = undefined
    this.#agent?.destroy()
    this.#agent = undefined
  }
}

function checkAzure (o: AzureBlobOptions): SettingsProblem[] {
  const problems = checkPrefix(o.prefix)
  if (o.connectionString === undefined && o.accountName === undefined && o.endpoint === undefined) {
    problems.push({ path: '/connectionString', message: 'expected connectionString, or accountName (with accountKey, sasToken, or nothing for Microsoft Entra ID), or endpoint' })
  }
  if (o.accountKey !== undefined && o.accountName === undefined) {
    problems.push({ path: '/accountName', message: 'expected accountName together with accountKey' })
  }
  return problems
}

async function azureBlobConnection (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerConnectionType({
    type: 'azure-blob',
    schema: AzureBlobOptionsSchema,
    check: checkAzure,
    create: (options: AzureBlobOptions, context) => new AzureBlobConnection(options, context)
  })
}

export default fp(azureBlobConnection, {
  fastify: '5.x',
  name: 'dss-event-server-azure-blob',
  dependencies: ['dss-event-server-types']
})
