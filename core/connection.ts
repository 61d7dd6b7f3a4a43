import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import type { Static, TSchema } from 'typebox'
import type { SettingsProblem } from './validation.js'

/**
 * What a connection can do beyond the operations every backend has. Declared, never probed.
 * - `append`: keys are local files that can be appended to in place (the filesystem), at
 *   `localPath(key)`: destinations write straight into them. Other connections get whole objects
 *   through `put`, from a local spool.
 */
export interface ConnectionCapabilities {
  readonly append: boolean
  /**
   * Whole-body digests the connection hands to its store when `PutOptions.checksum` carries them,
   * so that the store checks the object against them (e.g. GCS: `md5`). Digests the store checks
   * per part or block are computed by the connection itself and need not be listed.
   */
  readonly checksums?: ReadonlyArray<'sha256' | 'md5'>
}

export interface PutOptions {
  contentType?: string
  /** Byte length of the body, when known: lets object stores choose a single-request upload. */
  size?: number
  /** Aborts the upload; the key is then left as it was. */
  signal?: AbortSignal
  /**
   * Asks the store to check the bytes it receives, so that a corrupted upload is refused instead of
   * stored: the connection sends the checksums its store verifies (S3: SHA-256, Azure: MD5 per
   * block, GCS: CRC32C and MD5), computing those it is not given. `sha256` (hex) and `md5`
   * (base64) are digests of the whole body computed beforehand.
   */
  checksum?: { sha256?: string, md5?: string }
  /**
   * The object belongs to the audit trail: connections configured with retention (S3 Object Lock,
   * Azure immutability policies) lock it. Probes and other scratch objects leave it out.
   */
  retain?: boolean
}

/**
 * Marks an error that retrying cannot fix (access denied, bucket or container missing): the caller
 * stops retrying and keeps the data aside instead.
 */
export interface PermanentError extends Error {
  permanent: true
}

export function markPermanent<E extends Error> (err: E): E & PermanentError {
  return Object.assign(err, { permanent: true as const })
}

export function isPermanent (err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { permanent?: unknown }).permanent === true
}

export interface ObjectInfo {
  key: string
  size: number
}

/**
 * A filesystem-like backend (local filesystem, S3, Azure Blob Storage, Google Cloud Storage...).
 *
 * Keys are relative, `/`-separated, with no empty, `.` or `..` segment; they are already safe (the
 * caller encodes untrusted parts). A connection makes no network call until one of its methods runs.
 */
interface ConnectionOperations {
  readonly type: string
  readonly name: string
  readonly capabilities: ConnectionCapabilities
  /**
   * Writes a whole object, streaming the body; replaces an existing one under the same key,
   * atomically for readers. Rejects with a PermanentError when retrying cannot succeed.
   */
  put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<void>
  /** Opens an object for reading; rejects with EVS_ERR_CONNECTION_NOT_FOUND when it does not exist. */
  read(key: string): Promise<Readable>
  /** Every object whose key starts with `prefix` (a folder prefix ends with `/`), in no set order. */
  list(prefix: string): AsyncIterable<ObjectInfo>
  /**
   * The names of the folders directly below `folder` (a prefix ending with `/`, or `''` for the
   * root), in no set order: one level of the tree, without listing the objects below it (S3's
   * `Delimiter`, Azure's hierarchy listing). Optional: readers fall back to `list`.
   */
  listFolders?(folder: string): AsyncIterable<string>
  /** Deletes an object; deleting a missing object succeeds. */
  delete(key: string): Promise<void>
  /** Writes and deletes a probe object; rejects with the backend's own message when it cannot. */
  check(): Promise<void>
  close(): Promise<void>
}

/** A connection whose keys are local files: it declares `append` and says where each key is. */
export interface AppendableConnection extends ConnectionOperations {
  readonly capabilities: ConnectionCapabilities & { readonly append: true }
  /** Absolute local path of a key; throws EVS_ERR_CONNECTION_KEY_INVALID for an unsafe key. */
  localPath(key: string): string
}

/** A connection that stores whole objects (S3, Azure Blob Storage, Google Cloud Storage...). */
export interface ObjectConnection extends ConnectionOperations {
  readonly capabilities: ConnectionCapabilities & { readonly append: false }
}

export type Connection = AppendableConnection | ObjectConnection

/** Whether a connection declares the `append` capability (and so has `localPath`). */
export function canAppend (connection: Connection): connection is AppendableConnection {
  return connection.capabilities.append
}

export interface ConnectionContext {
  readonly name: string
  /** Folder that relative paths in settings resolve against (the settings file's folder). */
  readonly baseDir: string
  readonly logger: FastifyBaseLogger
}

export interface ConnectionType<S extends TSchema = TSchema> {
  readonly type: string
  /** Options of this type (everything in the settings block but `type`). */
  readonly schema: S
  /** Cross-field checks the schema cannot express; no I/O. */
  check?(options: Static<S>, context: ConnectionContext): SettingsProblem[]
  create(options: Static<S>, context: ConnectionContext): Connection
}

/** What every `check()` does: write a small probe object and delete it. */
export async function writeAndDeleteProbe (connection: Pick<Connection, 'put' | 'delete'>): Promise<void> {
  const probe = `.dss-event-server-probe-${randomBytes(6).toString('hex')}`
  await connection.put(probe, Buffer.from('probe\n'), { contentType: 'text/plain' })
  await connection.delete(probe)
}
