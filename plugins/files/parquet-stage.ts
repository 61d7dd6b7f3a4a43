import { copyFile, link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { foldersOfNewFile, fsyncDir, fsyncDirs, pruneEmptyFolders } from '../fs-sync.js'
import { ConversionError, Converter } from './converter.js'
import { PARQUET_SUFFIX, SPOOL_SUFFIX, type ConvertOptions } from './parquet.js'
import type { SpoolFile } from './uploader.js'

export interface ParquetStageOptions {
  spoolDir: string
  quarantineDir: string
  convert: ConvertOptions
  /** A conversion taking longer is abandoned and retried. */
  timeoutMs: number
  retryInitialMs: number
  retryMaxMs: number
  logger: FastifyBaseLogger
  /**
   * Hands a finished `.parquet` file (in the spool) on: queued for upload, or moved into its
   * folder. A rejection means it stays in the spool and is handed on again later.
   */
  place(file: SpoolFile): Promise<void> | void
  /** The spool grew (or shrank, negative) by this many bytes. */
  onSpoolBytes(delta: number): void
  onError(err: unknown): void
}

export interface ParquetStageStats {
  converted: number
  convertedRows: number
  convertedInputBytes: number
  convertedOutputBytes: number
  conversionSeconds: number
  conversionFailures: number
  conversionsPending: number
  conversionQuarantined: number
}

/** A worker crash or timeout on the same file this many times: the file is set aside. */
const MAX_CRASHES = 3

interface Job {
  file: SpoolFile
  attempt: number
  crashes: number
}

/** The key and path of the Parquet file a spool file becomes (`x.parquet.jsonl` → `x.parquet`). */
export function parquetOf (file: SpoolFile): { key: string, path: string } {
  const cut = (s: string): string => s.slice(0, -'.jsonl'.length)
  return { key: cut(file.key), path: cut(file.path) }
}

/**
 * The Parquet step between a sealed spool file and its final place. A sealed `x.parquet.jsonl` is
 * converted (in a worker thread) to `x.parquet.tmp`, synced, renamed `x.parquet`, and only then is
 * the JSON-lines file deleted; `x.parquet` is then placed (uploaded, or moved into the destination
 * folder). Every step leaves the spool in a state a restart completes: a `.tmp` is redone, a
 * `.parquet` beside its `.parquet.jsonl` means the conversion finished, a lone `.parquet` is placed.
 * Conversions run one at a time, in the order files were sealed.
 */
export class ParquetStage {
  readonly #options: ParquetStageOptions
  readonly #converter: Converter
  readonly #queue: Job[] = []
  readonly #waiting = new Map<Job, NodeJS.Timeout>()
  #running: Promise<void> | undefined
  #closed = false
  #idle: Array<() => void> = []
  readonly stats: ParquetStageStats = {
    converted: 0, convertedRows: 0, convertedInputBytes: 0, convertedOutputBytes: 0, conversionSeconds: 0, conversionFailures: 0, conversionsPending: 0, conversionQuarantined: 0
  }

  constructor (options: ParquetStageOptions) {
    this.#options = options
    this.#converter = new Converter({ convert: options.convert, timeoutMs: options.timeoutMs })
  }

  /** Takes a sealed `.parquet.jsonl` spool file. */
  enqueue (file: SpoolFile): void {
    this.#queue.push({ file, attempt: 0, crashes: 0 })
    this.#pump()
  }

  /**
   * Sorts what a previous run left in the spool: conversions are redone or finished, Parquet files
   * placed, temporary files deleted. Returns the files that are not this stage's (JSON lines of a
   * jsonl destination) for the caller to upload as they are.
   */
  async recover (files: SpoolFile[]): Promise<SpoolFile[]> {
    const others: SpoolFile[] = []
    const paths = new Set(files.map((f) => f.path))
    // Half-written conversions first: the conversions queued below write the same names.
    for (const file of files) {
      if (!file.key.endsWith(`${PARQUET_SUFFIX}.tmp`)) continue
      await unlink(file.path).catch(ignoreMissing)
      this.#options.onSpoolBytes(-file.size)
    }
    for (const file of files) {
      if (file.key.endsWith(`${PARQUET_SUFFIX}.tmp`)) {
        continue
      } else if (file.key.endsWith(SPOOL_SUFFIX)) {
        if (paths.has(parquetOf(file).path)) {
          // Converted and synced before the crash: the JSON lines are not needed anymore.
          await unlink(file.path).catch(ignoreMissing)
          this.#options.onSpoolBytes(-file.size)
        } else {
          this.enqueue(file)
        }
      } else if (file.key.endsWith(PARQUET_SUFFIX)) {
        await this.#place(file)
      } else {
        others.push(file)
      }
    }
    return others
  }

  /** Resolves once nothing is queued, waiting for a retry or converting. */
  async drain (): Promise<void> {
    if (this.#pending() === 0) return
    await new Promise<void>((resolve) => this.#idle.push(resolve))
  }

  /**
   * Stops: the conversions queued get `graceMs` to finish (0: none), then the worker is stopped.
   * Whatever is not converted stays in the spool for the next start.
   */
  async close (graceMs: number): Promise<void> {
    if (graceMs > 0 && this.#pending() > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.drain(), new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })])
      clearTimeout(timer)
    }
    this.#closed = true
    for (const timer of this.#waiting.values()) clearTimeout(timer)
    this.#waiting.clear()
    await this.#converter.close()
    await this.#running
    this.#notifyIdle()
  }

  #pending (): number {
    return this.#queue.length + this.#waiting.size + (this.#running !== undefined ? 1 : 0)
  }

  #pump (): void {
    this.stats.conversionsPending = this.#pending()
    if (this.#closed || this.#running !== undefined) return
    const job = this.#queue.shift()
    if (job === undefined) return
    this.#running = this.#convert(job).catch((err: unknown) => {
      this.#options.logger.error({ err, key: job.file.key }, 'converting a spool file to Parquet failed unexpectedly; will retry')
      this.#retryLater(job)
    }).finally(() => {
      this.#running = undefined
      this.#pump()
      this.#notifyIdle()
    })
    this.stats.conversionsPending = this.#pending()
  }

  #notifyIdle (): void {
    this.stats.conversionsPending = this.#pending()
    if (this.#pending() > 0 && !this.#closed) return
    const waiters = this.#idle
    this.#idle = []
    for (const resolve of waiters) resolve()
  }

  async #convert (job: Job): Promise<void> {
    const { file } = job
    const { logger } = this.#options
    const target = parquetOf(file)
    const temp = `${target.path}.tmp`
    const started = performance.now()
    let result
    try {
      result = await this.#converter.convert(file.path, temp)
    } catch (err) {
      await unlink(temp).catch(() => {})
      if (this.#closed) return // stopping: the spool file stays for the next start
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(file.path))) {
        // Gone: converted by the previous instance of this destination before a reload.
        return
      }
      this.stats.conversionFailures++
      this.#options.onError(err)
      const e = err as ConversionError
      const crashes = job.crashes + (e.crashed ? 1 : 0)
      if (e.permanent || crashes >= MAX_CRASHES) {
        await this.#quarantine(file, e)
        return
      }
      logger.warn({ key: file.key, attempt: job.attempt + 1, err: { message: e.message, code: e.code } },
        'converting a spool file to Parquet failed; it stays in the spool and will be retried')
      this.#retryLater({ ...job, crashes })
      return
    }
    const seconds = (performance.now() - started) / 1000
    if (result.rows === 0) {
      await unlink(temp).catch(ignoreMissing)
      await unlink(file.path).catch(ignoreMissing)
      this.#options.onSpoolBytes(-file.size)
      return
    }
    await rename(temp, target.path)
    await fsyncDir(dirname(target.path))
    await unlink(file.path).catch(ignoreMissing)
    this.#options.onSpoolBytes(result.outputBytes - file.size)
    this.stats.converted++
    this.stats.convertedRows += result.rows
    this.stats.convertedInputBytes += result.inputBytes
    this.stats.convertedOutputBytes += result.outputBytes
    this.stats.conversionSeconds += seconds
    logger.debug({ key: target.key, rows: result.rows, inputBytes: result.inputBytes, outputBytes: result.outputBytes, seconds }, 'converted to Parquet')
    await this.#place({ key: target.key, path: target.path, size: result.outputBytes, since: file.since })
  }

  /** Places a `.parquet` file; on failure, tries again later (it stays in the spool meanwhile). */
  async #place (file: SpoolFile, attempt = 0): Promise<void> {
    try {
      await this.#options.place(file)
    } catch (err) {
      this.#options.onError(err)
      if (this.#closed) return
      this.#options.logger.warn({ key: file.key, attempt: attempt + 1, err: { message: (err as Error).message, code: (err as NodeJS.ErrnoException).code } },
        'placing a Parquet file failed; it stays in the spool and will be retried')
      const job: Job = { file, attempt, crashes: 0 }
      const timer = setTimeout(() => {
        this.#waiting.delete(job)
        void this.#place(file, attempt + 1).finally(() => this.#notifyIdle())
      }, this.#backoff(attempt))
      timer.unref()
      this.#waiting.set(job, timer)
    }
  }

  #retryLater (job: Job): void {
    if (this.#closed) return
    const timer = setTimeout(() => {
      this.#waiting.delete(job)
      this.#queue.push({ ...job, attempt: job.attempt + 1 })
      this.#pump()
    }, this.#backoff(job.attempt))
    timer.unref()
    this.#waiting.set(job, timer)
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
    this.#options.onSpoolBytes(-file.size)
    this.stats.conversionQuarantined++
    this.#options.logger.error({ key: file.key, quarantinedAt: target, err: { message: err.message } },
      'a spool file cannot be converted to Parquet: it is kept in quarantine, as JSON lines (see README, "Replaying quarantined files")')
    await pruneEmptyFolders(dirname(file.path), this.#options.spoolDir)
  }
}

function ignoreMissing (err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

/**
 * Puts a finished file from the spool at its place on the local filesystem, atomically for
 * readers, and leaves the spool file: the caller deletes it once the file is accounted for (its
 * digest recorded), so that a crash in between only makes the next start place it again, which
 * changes nothing. A hard link when the spool is on the same filesystem (a link already there
 * from an earlier attempt is the same file); otherwise a copy to a hidden `.<name>.tmp` beside the
 * target, synced, then renamed. Another file already under the target's name is never replaced.
 * The target's folder is synced before this resolves.
 */
export async function placeCopy (from: string, to: string): Promise<void> {
  const folder = dirname(to)
  const created = await mkdir(folder, { recursive: true })
  // Each new folder's entry is in its parent: sync those now, the target's folder once it holds the file.
  await fsyncDirs(foldersOfNewFile(folder, created).slice(1), 2)
  try {
    await link(from, to)
    await fsyncDir(folder)
    return
  } catch (err) {
    // Another filesystem, or one without hard links: copy, below.
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EEXIST' && code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EMLINK' && code !== 'ENOSYS') throw err
  }
  if (await exists(to)) {
    // Placed by an earlier attempt (a link to it, or a copy of it): done. Anything else under that
    // name (the state folder was reset, and sequence numbers started again) is never replaced.
    if (!await sameFile(from, to) && !(await readFile(from)).equals(await readFile(to))) {
      throw new Error(`${to} already holds another file: not replaced (was the state folder reset?); the spool file is kept`)
    }
    await fsyncDir(folder)
    return
  }
  const temp = join(folder, `.${basename(to)}.tmp`)
  await copyFile(from, temp)
  const handle = await open(temp, 'r+')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
  await rename(temp, to)
  await fsyncDir(folder)
}

async function sameFile (a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([stat(a), stat(b)])
  return x.dev === y.dev && x.ino === y.ino
}
