import { resolve } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { Storage, type Bucket, type StorageOptions } from '@google-cloud/storage'
import { markPermanent, writeAndDeleteProbe, type Connection, type ConnectionContext, type ObjectInfo, type PutOptions } from '../../core/connection.js'
import { EVS_ERR_CONNECTION_NOT_FOUND } from '../../core/errors.js'
import { assertSafeKey } from '../../core/path-encoding.js'
import type { SettingsProblem } from '../../core/validation.js'
import { checkPrefix, joinPrefix } from '../object-store-prefix.js'

export const GcsOptionsSchema = Type.Object({
  bucket: Type.String({ minLength: 3 }),
  prefix: Type.String({ default: '', description: 'object name prefix inside the bucket, e.g. "audit/"' }),
  projectId: Type.Optional(Type.String({ minLength: 1 })),
  keyFilename: Type.Optional(Type.String({ minLength: 1, description: 'service account key file; relative to the settings file folder' })),
  credentials: Type.Optional(Type.String({ minLength: 2, description: 'service account key JSON, e.g. "${GCS_CREDENTIALS_JSON}"' })),
  apiEndpoint: Type.Optional(Type.String({ minLength: 1, description: 'for emulators or private endpoints' })),
  uploadMode: Type.Union([Type.Literal('resumable'), Type.Literal('simple')], { default: 'resumable' })
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

export class GcsConnection implements Connection {
  readonly type = 'gcs'
  readonly name: string
  readonly capabilities = { append: false } as const
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
      metadata: {
        ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
        ...(options.contentEncoding !== undefined ? { contentEncoding: options.contentEncoding } : {})
      }
    })
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, stream, ...(options.signal !== undefined ? [{ signal: options.signal }] : []))
    } catch (err) {
      classify(err)
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
