import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { isPermanent, type Connection, type PutOptions } from '../../core/plugin-api.js'
import { fsyncDir, pruneEmptyFolders } from '../fs-sync.js'

export interface SpoolFile {
  readonly key: string
  readonly path: string
  readonly size: number
  /** When its first event was received; for the age of the oldest pending event. */
  readonly since: number
}

export interface UploaderOptions {
  connection: Connection
  spoolDir: string
  quarantineDir: string
  concurrency: number
  retryInitialMs: number
  retryMaxMs: number
  logger: FastifyBaseLogger
  now(): number
  /** Called when a file left the spool (uploaded or quarantined) with its size. */
  onRemoved(bytes: number): void
  /** Called after each upload attempt. */
  onAttempt?(seconds: number, outcome: 'ok' | 'failed' | 'quarantined', err?: unknown): void
  /** Before each upload: digests the store should check the object against (see PutOptions.checksum). */
  prepare?(file: SpoolFile): Promise<PutOptions['checksum']>
  /** Once the store confirmed the object, before the spool file is deleted; a failure keeps the file for a retry. */
  confirmed?(file: SpoolFile): Promise<void>
}

export interface UploaderStats {
  uploaded: number
  uploadedBytes: number
  retries: number
  quarantined: number
  pending: number
  pendingBytes: number
  oldestPendingSince: number | null
  lastError: { message: string, at: string } | null
}

/** What `close` left in the spool. */
export interface LeftInSpool {
  files: number
  bytes: number
  /** When the first event of the oldest file left was received. */
  oldestSince: number | null
  oldestKey: string | null
}

interface Job {
  file: SpoolFile
  attempt: number
}

// After the grace period, uploads are aborted; an SDK that ignored the abort is not waited for longer.
const ABORT_WAIT_MS = 2000

function contentTypeOf (key: string): { contentType: string } {
  // `.gz` and `.zst` objects are stored as such, not with Content-Encoding: clients would otherwise
  // decompress them on download and readers expecting gzip or zstd would break.
  if (key.endsWith('.parquet')) return { contentType: 'application/vnd.apache.parquet' }
  if (key.endsWith('.zst')) return { contentType: 'application/zstd' }
  return { contentType: key.endsWith('.gz') ? 'application/gzip' : 'application/x-ndjson' }
}

/**
 * Ships sealed spool files to an object store, each as one object under its deterministic key,
 * a few at a time. A file leaves the spool only once the store confirmed the whole object; a
 * failure is retried with exponential backoff and jitter, forever unless the store says retrying
 * cannot help (then the file moves to the quarantine folder).
 */
export class Uploader {
  readonly #options: UploaderOptions
  readonly #queue: Job[] = []
  readonly #waiting = new Map<Job, NodeJS.Timeout>()
  readonly #running = new Map<Job, AbortController>()
  #closed = false
  // Resolved once nothing is pending (drain), and once nothing is running (close).
  #idle: Array<() => void> = []
  #settled: Array<() => void> = []
  readonly stats: UploaderStats = {
    uploaded: 0, uploadedBytes: 0, retries: 0, quarantined: 0, pending: 0, pendingBytes: 0, oldestPendingSince: null, lastError: null
  }

  // A file stays pending until it left the spool and the folders it emptied are gone.
  readonly #pending = new Set<SpoolFile>()

  constructor (options: UploaderOptions) {
    this.#options = options
  }

  enqueue (file: SpoolFile): void {
    this.#pending.add(file)
    this.#refreshPending()
    this.#queue.push({ file, attempt: 0 })
    this.#pump()
  }

  /** Resolves once nothing is queued, waiting for a retry or uploading (or the uploader is closed). */
  async drain (): Promise<void> {
    if (this.#pending.size === 0 || this.#closed) return
    await new Promise<void>((resolve) => this.#idle.push(resolve))
  }

  /**
   * Stops. For `graceMs` it goes on as before: queued files are started as slots free up and
   * failed ones retried. Then no upload or retry starts, uploads under way are aborted, and
   * whatever is not uploaded stays in the spool for the next start: it is returned.
   */
  async close (graceMs: number): Promise<LeftInSpool> {
    if (graceMs > 0 && this.#pending.size > 0 && !this.#closed) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.drain(), new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })])
      clearTimeout(timer)
    }
    this.#closed = true
    for (const timer of this.#waiting.values()) clearTimeout(timer)
    this.#waiting.clear()
    this.#queue.length = 0
    for (const controller of this.#running.values()) controller.abort(new Error('shutting down'))
    if (this.#running.size > 0) {
      let timer: NodeJS.Timeout | undefined
      const settled = new Promise<void>((resolve) => this.#settled.push(resolve))
      const late = await Promise.race([settled.then(() => false), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), ABORT_WAIT_MS) })])
      clearTimeout(timer)
      if (late) this.#options.logger.warn({ uploads: this.#running.size }, 'uploads did not stop when aborted; not waiting for them')
    }
    this.#notify()
    let oldest: SpoolFile | null = null
    for (const file of this.#pending) if (oldest === null || file.since < oldest.since) oldest = file
    return { files: this.stats.pending, bytes: this.stats.pendingBytes, oldestSince: oldest?.since ?? null, oldestKey: oldest?.key ?? null }
  }

  #refreshPending (): void {
    let bytes = 0
    let oldest: number | null = null
    for (const file of this.#pending) {
      bytes += file.size
      if (oldest === null || file.since < oldest) oldest = file.since
    }
    this.stats.pending = this.#pending.size
    this.stats.pendingBytes = bytes
    this.stats.oldestPendingSince = oldest
  }

  #pump (): void {
    while (!this.#closed && this.#running.size < this.#options.concurrency && this.#queue.length > 0) {
      const job = this.#queue.shift() as Job
      const controller = new AbortController()
      this.#running.set(job, controller)
      void this.#run(job, controller.signal).catch((err: unknown) => {
        // Local trouble (the spool's disk): keep the file and try again later.
        this.#options.logger.error({ key: job.file.key, err }, 'handling an upload failed locally; will retry')
        this.#retryLater(job)
      }).finally(() => {
        this.#running.delete(job)
        this.#pump()
        this.#notify()
      })
    }
  }

  #notify (): void {
    if (this.#pending.size === 0 || this.#closed) {
      const waiters = this.#idle
      this.#idle = []
      for (const resolve of waiters) resolve()
    }
    if (this.#running.size === 0) {
      const waiters = this.#settled
      this.#settled = []
      for (const resolve of waiters) resolve()
    }
  }

  async #run (job: Job, signal: AbortSignal): Promise<void> {
    const { connection, logger } = this.#options
    const { file } = job
    const started = performance.now()
    const seconds = (): number => (performance.now() - started) / 1000
    let handle: FileHandle
    try {
      // Opened before the upload starts, so a missing file is an answer here, not a stray stream error.
      handle = await open(file.path, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      // The spool file is gone: another uploader of this spool (before a reload) finished it.
      await pruneEmptyFolders(dirname(file.path), this.#options.spoolDir)
      this.#removed(file)
      return
    }
    let checksum: PutOptions['checksum']
    try {
      checksum = await this.#options.prepare?.(file) ?? {}
    } catch (err) {
      await handle.close()
      throw err
    }
    const body = handle.createReadStream()
    try {
      await connection.put(file.key, body, { ...contentTypeOf(file.key), size: file.size, signal, checksum, retain: true })
    } catch (err) {
      body.destroy() // a failed upload may not have read the file to its end: release the descriptor
      if (signal.aborted) return // stopping: the file stays in the spool for the next start
      this.stats.lastError = { message: (err as Error).message, at: new Date(this.#options.now()).toISOString() }
      if (isPermanent(err)) {
        this.#options.onAttempt?.(seconds(), 'quarantined', err)
        await this.#quarantine(file, err as Error)
        return
      }
      this.#options.onAttempt?.(seconds(), 'failed', err)
      logger.warn({ key: file.key, attempt: job.attempt + 1, err: { message: (err as Error).message, code: (err as { code?: string }).code } },
        'upload failed; the file stays in the spool and will be retried')
      this.#retryLater(job)
      return
    }
    await this.#options.confirmed?.(file)
    try {
      await unlink(file.path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    this.#options.onAttempt?.(seconds(), 'ok')
    logger.debug({ key: file.key, bytes: file.size }, 'uploaded')
    // Done only once its folders are pruned too: whoever waits for the spool to empty finds it empty.
    await pruneEmptyFolders(dirname(file.path), this.#options.spoolDir)
    this.stats.uploaded++
    this.stats.uploadedBytes += file.size
    this.#removed(file)
  }

  #retryLater (job: Job): void {
    if (this.#closed) return
    this.stats.retries++
    const timer = setTimeout(() => {
      this.#waiting.delete(job)
      this.#queue.push({ file: job.file, attempt: job.attempt + 1 })
      this.#pump()
    }, this.#backoff(job.attempt))
    timer.unref()
    this.#waiting.set(job, timer)
  }

  #removed (file: SpoolFile): void {
    this.#pending.delete(file)
    this.#refreshPending()
    this.#options.onRemoved(file.size)
  }

  #backoff (attempt: number): number {
    const { retryInitialMs, retryMaxMs } = this.#options
    const ceiling = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(attempt, 30))
    return ceiling / 2 + Math.random() * ceiling / 2
  }

  async #quarantine (file: SpoolFile, err: Error): Promise<void> {
    const target = join(this.#options.quarantineDir, ...file.key.split('/'))
    await mkdir(dirname(target), { recursive: true })
    await rename(file.path, target)
    await fsyncDir(dirname(target))
    this.#options.logger.error({ key: file.key, quarantinedAt: target, err: { message: err.message, code: (err as { code?: string }).code } },
      'the store refused the upload and retrying cannot help: the file is kept in quarantine (see README, "Replaying quarantined files")')
    await pruneEmptyFolders(dirname(file.path), this.#options.spoolDir)
    this.stats.quarantined++
    this.#removed(file)
  }
}
