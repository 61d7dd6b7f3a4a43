import type { Readable } from 'node:stream'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { BlobServiceClient, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob'
import { markPermanent, writeAndDeleteProbe, type Connection, type ConnectionContext, type ObjectInfo, type PutOptions } from '../../core/connection.js'
import { EVS_ERR_CONNECTION_NOT_FOUND } from '../../core/errors.js'
import { assertSafeKey } from '../../core/path-encoding.js'
import type { SettingsProblem } from '../../core/validation.js'
import { checkPrefix, joinPrefix } from '../object-store-prefix.js'

export const AzureBlobOptionsSchema = Type.Object({
  container: Type.String({ minLength: 3, maxLength: 63 }),
  prefix: Type.String({ default: '', description: 'blob name prefix inside the container, e.g. "audit/"' }),
  connectionString: Type.Optional(Type.String({ minLength: 1 })),
  accountName: Type.Optional(Type.String({ minLength: 1 })),
  accountKey: Type.Optional(Type.String({ minLength: 1 })),
  sasToken: Type.Optional(Type.String({ minLength: 1 })),
  endpoint: Type.Optional(Type.String({ minLength: 1, description: 'blob service URL; default https://<accountName>.blob.core.windows.net' })),
  blockSizeBytes: Type.Integer({ default: 4 * 1024 * 1024, minimum: 64 * 1024, maximum: 100 * 1024 * 1024 }),
  uploadConcurrency: Type.Integer({ default: 2, minimum: 1, maximum: 16 })
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
const PIPELINE = { retryOptions: { maxTries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4000 } }

function serviceUrl (o: AzureBlobOptions): string {
  return (o.endpoint ?? `https://${o.accountName as string}.blob.core.windows.net`).replace(/\/+$/, '')
}

export class AzureBlobConnection implements Connection {
  readonly type = 'azure-blob'
  readonly name: string
  readonly capabilities = { append: false } as const
  readonly #options: AzureBlobOptions
  readonly #prefix: string
  #container: Promise<ContainerClient> | undefined

  constructor (options: AzureBlobOptions, context: Pick<ConnectionContext, 'name'>) {
    this.name = context.name
    this.#options = options
    this.#prefix = joinPrefix(options.prefix)
  }

  // Created on first use: constructing the connection makes no call and reads no credentials.
  async #client (): Promise<ContainerClient> {
    this.#container ??= (async () => {
      const o = this.#options
      let service: BlobServiceClient
      if (o.connectionString !== undefined) {
        service = BlobServiceClient.fromConnectionString(o.connectionString, PIPELINE)
      } else if (o.accountKey !== undefined) {
        service = new BlobServiceClient(serviceUrl(o), new StorageSharedKeyCredential(o.accountName as string, o.accountKey), PIPELINE)
      } else if (o.sasToken !== undefined) {
        service = new BlobServiceClient(`${serviceUrl(o)}?${o.sasToken.replace(/^\?/, '')}`, undefined, PIPELINE)
      } else {
        // Microsoft Entra ID: environment, workload identity, managed identity, Azure CLI...
        // Imported only for this mode, so the other modes never load @azure/identity.
        const { DefaultAzureCredential } = await import('@azure/identity')
        service = new BlobServiceClient(serviceUrl(o), new DefaultAzureCredential(), PIPELINE)
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
        ...(options.contentType !== undefined ? { blobContentType: options.contentType } : {}),
        ...(options.contentEncoding !== undefined ? { blobContentEncoding: options.contentEncoding } : {})
      },
      ...(options.signal !== undefined ? { abortSignal: options.signal } : {})
    }
    try {
      if (Buffer.isBuffer(body)) await blob.upload(body, body.length, common)
      // Staged blocks, committed at the end: an aborted upload leaves the previous blob as it was.
      else await blob.uploadStream(body, this.#options.blockSizeBytes, this.#options.uploadConcurrency, common)
    } catch (err) {
      classify(err)
    }
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
