import { mkdir, open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { gzip } from 'node:zlib'
import { promisify } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import { fsyncDir } from '../../core/fs-sync.js'
import { Deferred } from './deferred.js'
import type { Journal } from './journal.js'

const gzipAsync = promisify(gzip)

export type Compression = 'none' | 'gzip'
export type Durability = 'fsync' | 'write'

export interface WriterOptions {
  /** Local path of a key. */
  localPath(key: string): string
  /** File name (last key segment) of the file with this sequence number. */
  fileName(seq: number): string
  compression: Compression
  durability: Durability
  /** A file is sealed once it holds this many bytes; 0 seals it after every write. */
  flushEveryBytes: number
  /** A file is sealed this many seconds after it was opened; 0 never. */
  flushEveryS: number
  maxOpenFiles: number
  journal: Journal
  logger: FastifyBaseLogger
  now(): number
  /** Called with the bytes each write added to disk. */
  onWritten?(bytes: number): void
  /** Called with the duration of each file's write-and-sync in a commit. */
  onSynced?(seconds: number): void
  /** Called when a write fails. */
  onError?(err: unknown): void
  /** Called once a file is complete, closed and durable. */
  onSealed?(file: SealedFile): void
}

export interface SealedFile {
  readonly seq: number
  readonly key: string
  readonly path: string
  readonly size: number
  /** When the file was started: its oldest event is at most this old. */
  readonly openedAt: number
}

export interface WriterStats {
  openFiles: number
  filesOpened: number
  filesSealed: number
  bytesWritten: number
  linesWritten: number
  commits: number
  syncs: number
}

/** A file being written: lines wait in `pending` until the next commit writes and syncs them. */
class OpenFile {
  handle: FileHandle | undefined
  size = 0
  pending: Buffer[] = []
  pendingBytes = 0
  pendingLines = 0
  waiter: Deferred | undefined
  retired = false
  failed = false
  sealed = false

  constructor (
    public seq: number,
    public key: string,
    readonly folder: string,
    readonly period: string,
    readonly openedAt: number
  ) {}
}

/**
 * Appends lines to one file per folder and time period, under a local root, with group commit:
 * lines appended while a commit runs wait for the next one, and one write plus one fdatasync per
 * touched file serves every request in it. The promise `append` returns settles when the lines are
 * durable (or written, with durability `write`). Files are sealed by size, age, period change, the
 * open-file cap (least recently used first), and on flush; a sealed file is never written again.
 */
export class PartitionWriter {
  readonly #options: WriterOptions
  readonly #open = new Map<string, OpenFile>()
  readonly #dirty = new Set<OpenFile>()
  #committing = false
  #scheduled = false
  #idle: Deferred | undefined
  readonly stats: WriterStats = { openFiles: 0, filesOpened: 0, filesSealed: 0, bytesWritten: 0, linesWritten: 0, commits: 0, syncs: 0 }

  constructor (options: WriterOptions) {
    this.#options = options
  }

  append (folder: string, period: string, lines: readonly Buffer[]): Promise<void> {
    let file = this.#open.get(folder)
    if (file !== undefined && file.period !== period) {
      this.#retire(file)
      file = undefined
    }
    if (file === undefined) {
      file = this.#create(folder, period)
    } else {
      // Keep the map in least-recently-used order for the open-file cap.
      this.#open.delete(folder)
      this.#open.set(folder, file)
    }
    for (const line of lines) {
      file.pending.push(line)
      file.pendingBytes += line.length
    }
    file.pendingLines += lines.length
    const waiter = (file.waiter ??= new Deferred())
    this.#dirty.add(file)
    const { flushEveryBytes } = this.#options
    if (flushEveryBytes === 0 || file.size + file.pendingBytes >= flushEveryBytes) this.#retire(file)
    this.#schedule()
    return waiter.promise
  }

  /** Seals files whose period ended or whose age passed flushEveryS. */
  sealExpired (currentPeriod: (folder: string) => string): void {
    const { flushEveryS, now } = this.#options
    const limit = flushEveryS > 0 ? now() - flushEveryS * 1000 : Number.NEGATIVE_INFINITY
    for (const file of [...this.#open.values()]) {
      if (file.openedAt <= limit || file.period !== currentPeriod(file.folder)) this.#retire(file)
    }
  }

  /** Commits everything appended so far and seals every open file. */
  async flush (): Promise<void> {
    for (const file of [...this.#open.values()]) this.#retire(file)
    await this.#whenIdle()
  }

  get openFiles (): number {
    return this.#open.size
  }

  #create (folder: string, period: string): OpenFile {
    const { journal, fileName, now, maxOpenFiles } = this.#options
    if (this.#open.size >= maxOpenFiles) {
      const oldest = this.#open.values().next().value
      if (oldest !== undefined) this.#retire(oldest)
    }
    const seq = journal.nextSeq()
    const file = new OpenFile(seq, `${folder}/${fileName(seq)}`, folder, period, now())
    this.#open.set(folder, file)
    this.stats.openFiles = this.#open.size
    return file
  }

  #retire (file: OpenFile): void {
    if (file.retired) return
    file.retired = true
    if (this.#open.get(file.folder) === file) this.#open.delete(file.folder)
    this.stats.openFiles = this.#open.size
    this.#dirty.add(file)
    this.#schedule()
  }

  #schedule (): void {
    if (this.#scheduled || this.#committing) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      void this.#commit()
    })
  }

  async #commit (): Promise<void> {
    this.#committing = true
    while (this.#dirty.size > 0) {
      const files = [...this.#dirty]
      this.#dirty.clear()
      this.stats.commits++
      await Promise.all(files.map(async (file) => {
        await this.#commitFile(file).catch((err) => this.#options.logger.error({ err, key: file.key }, 'file commit failed'))
      }))
    }
    this.#committing = false
    const idle = this.#idle
    this.#idle = undefined
    idle?.resolve()
  }

  async #whenIdle (): Promise<void> {
    if (!this.#committing && !this.#scheduled && this.#dirty.size === 0) return
    await (this.#idle ??= new Deferred()).promise
  }

  async #commitFile (file: OpenFile): Promise<void> {
    const waiter = file.waiter
    const lines = file.pending
    const count = file.pendingLines
    file.waiter = undefined
    file.pending = []
    file.pendingBytes = 0
    file.pendingLines = 0
    if (lines.length > 0) {
      try {
        if (file.failed) throw new Error('the file failed earlier')
        const started = performance.now()
        await this.#ensureOpen(file)
        const handle = file.handle as FileHandle
        const data = this.#options.compression === 'gzip' ? [await gzipAsync(Buffer.concat(lines))] : lines
        const written = await writeAll(handle, data)
        if (this.#options.durability === 'fsync') {
          await handle.datasync()
          this.stats.syncs++
        }
        file.size += written
        this.stats.bytesWritten += written
        this.#options.onWritten?.(written)
        this.#options.onSynced?.((performance.now() - started) / 1000)
        this.stats.linesWritten += count
        waiter?.resolve()
      } catch (err) {
        file.failed = true
        this.#retire(file)
        this.#options.logger.error({ err, key: file.key }, 'writing events failed')
        this.#options.onError?.(err)
        waiter?.reject(err)
      }
    }
    if (file.retired && file.pending.length === 0 && !file.sealed) await this.#seal(file)
  }

  async #ensureOpen (file: OpenFile): Promise<void> {
    if (file.handle !== undefined) return
    const { journal, localPath, fileName } = this.#options
    await journal.opened(file.seq, file.key)
    for (;;) {
      const path = localPath(file.key)
      const created = await mkdir(dirname(path), { recursive: true })
      try {
        file.handle = await open(path, 'ax')
      } catch (err) {
        // The uploader removed the emptied folder in between: make it again.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
        // The state folder was lost or reset: never write into a file this writer did not create.
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        await journal.sealed(file.seq)
        file.seq = journal.nextSeq()
        file.key = `${file.folder}/${fileName(file.seq)}`
        await journal.opened(file.seq, file.key)
        continue
      }
      await syncNewFolders(dirname(path), created)
      this.stats.filesOpened++
      return
    }
  }

  async #seal (file: OpenFile): Promise<void> {
    file.sealed = true
    const handle = file.handle
    const path = this.#options.localPath(file.key)
    if (handle !== undefined) {
      try {
        // After a failed write, cut whatever part of it reached the file.
        if (file.failed) await handle.truncate(file.size)
        await handle.datasync()
      } catch (err) {
        this.#options.logger.error({ err, key: file.key }, 'sealing a file failed; recovery will look at it on restart')
        await handle.close().catch(() => {})
        return
      } finally {
        file.handle = undefined
      }
      await handle.close()
    }
    try {
      await this.#options.journal.sealed(file.seq)
    } catch (err) {
      this.#options.logger.error({ err, key: file.key }, 'recording a sealed file failed')
    }
    if (handle !== undefined) {
      this.stats.filesSealed++
      this.#options.onSealed?.({ seq: file.seq, key: file.key, path, size: file.size, openedAt: file.openedAt })
    }
  }
}

async function writeAll (handle: FileHandle, data: Buffer[]): Promise<number> {
  let total = 0
  for (const b of data) total += b.length
  let { bytesWritten } = await handle.writev(data)
  while (bytesWritten < total) {
    // A short write: rare, but the rest must follow in order.
    const rest = Buffer.concat(data).subarray(bytesWritten)
    bytesWritten += (await handle.write(rest)).bytesWritten
  }
  return total
}

/** fsyncs the folder of a new file, and the parents of every folder mkdir created for it. */
async function syncNewFolders (folder: string, firstCreated: string | undefined): Promise<void> {
  await fsyncDir(folder)
  if (firstCreated === undefined) return
  const stop = dirname(firstCreated)
  for (let current = folder; current !== stop && current !== dirname(current); current = dirname(current)) {
    await fsyncDir(dirname(current))
  }
}
