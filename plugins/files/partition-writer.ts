import { mkdir, open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { fsyncDir } from '../../core/fs-sync.js'
import { Appender } from './appender.js'
import { compressLines } from './compression.js'
import { Deferred } from './deferred.js'
import type { Journal } from './journal.js'
import type { CommitLog } from './commit-log.js'

export type Compression = 'none' | 'gzip' | 'zstd'
export type Durability = 'fsync' | 'write'

export interface WriterOptions {
  /** Local path of a key. */
  localPath(key: string): string
  /** File name (last key segment) of the file with this sequence number. */
  fileName(seq: number): string
  compression: Compression
  /** With compression zstd: its level. */
  zstdLevel?: number
  durability: Durability
  /** A file is sealed once it holds this many bytes; 0 seals it after every write. */
  flushEveryBytes: number
  /** A file is sealed this many seconds after it was opened; 0 never. */
  flushEveryS: number
  /** File descriptors kept open at most (least recently used closed first). */
  maxOpenFiles: number
  /** Files being written at most (least recently used sealed first). */
  maxActiveFiles: number
  /** Commits whose fdatasync may run at once: the next commit writes while earlier ones sync. */
  pipelinedCommits: number
  /**
   * With durability `fsync`: a commit syncs this log once instead of every file it touched; files
   * are synced at checkpoints (after `checkpointBytes` of log or `checkpointMs`).
   */
  commitLog?: CommitLog
  checkpointBytes?: number
  checkpointMs?: number
  /** Commit-log mode: deferred bytes held in memory at most, all files together (16 MiB). */
  deferredMemoryBytes?: number
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
  activeFiles: number
  filesOpened: number
  filesSealed: number
  bytesWritten: number
  linesWritten: number
  commits: number
  syncs: number
}


// Commit-log mode: a file without an open descriptor keeps up to this many logged bytes before
// they are written, so many partitions do not mean one open and close per request.
const DEFERRED_WRITE_LIMIT = 64 * 1024
/** Deferred bytes held in memory at most by default, all files together: beyond, the largest are written out. */
const DEFERRED_MEMORY_LIMIT = 16 * 1024 * 1024

/** A file being written: lines wait in `pending` until the next commit writes and syncs them. */
class OpenFile {
  handle: FileHandle | undefined
  created = false
  size = 0
  pending: Buffer[] = []
  pendingBytes = 0
  pendingLines = 0
  waiter: Deferred | undefined
  retired = false
  failed = false
  sealed = false
  /** Writes or syncs in flight on the handle: it cannot be closed meanwhile. */
  busy = 0
  /** Syncs in flight for this file. */
  readonly syncs = new Set<Promise<void>>()
  /** A descriptor being opened for this file: concurrent callers share it. */
  opening: Promise<FileHandle> | undefined
  /** Commit-log mode: logged bytes not yet written to the file (written later, in order). */
  unwritten: Buffer[] = []
  unwrittenBytes = 0
  /** The last write of unwritten bytes: the next one waits for it, so bytes land in log order. */
  writing: Promise<void> = Promise.resolve()
  /** Bytes actually in the file (size counts the unwritten ones too). */
  written = 0

  constructor (
    public seq: number,
    public key: string,
    readonly folder: string,
    readonly period: string,
    readonly openedAt: number
  ) {}
}

interface Written {
  file: OpenFile
  waiter: Deferred | undefined
  started: number
}

/** Lines taken from a file for this commit, its descriptor held. */
interface Taken extends Written {
  data: Buffer[]
  bytes: number
  count: number
}

/**
 * Appends lines to one file per folder and time period, with group commit: lines appended while a
 * commit runs wait for the next one, and one write plus one fdatasync per touched file serves every
 * request in a commit (with a commit log: one log append and sync, whatever the files). Up to
 * `pipelinedCommits` commits may sync at once. The promise `append` returns settles when the lines
 * are durable (or written, with durability `write`). Files are sealed by size, age, period change,
 * the active-file cap (least recently used first), and on flush; a sealed file is never written
 * again. File descriptors are a cache of their own, capped by maxOpenFiles: many partitions cost
 * reopening, not new files.
 */
export class PartitionWriter {
  readonly #options: WriterOptions
  readonly #active = new Map<string, OpenFile>()
  readonly #dirty = new Set<OpenFile>()
  /** Open descriptors in least-recently-used order. */
  readonly #descriptors = new Set<OpenFile>()
  readonly #syncing = new Set<Promise<void>>()
  /** Descriptors being opened or closed: they count against the cap too. */
  #inTransit = 0
  readonly #sealing = new Set<Promise<void>>()
  /** Files written since the last checkpoint: their bytes are only in the commit log's current segment. */
  #unsynced = new Set<OpenFile>()
  /** Commit-log mode: logged bytes held in memory, not yet written to their files. */
  #deferredBytes = 0
  #checkpointing: Promise<void> | undefined
  /** A deferred write failed: keep every log segment, so a restart replays what the files lack. */
  #pinLog = false
  #committing = false
  #scheduled = false
  readonly #appender: Appender
  #idle: Deferred | undefined
  readonly stats: WriterStats = { openFiles: 0, activeFiles: 0, filesOpened: 0, filesSealed: 0, bytesWritten: 0, linesWritten: 0, commits: 0, syncs: 0 }

  constructor (options: WriterOptions) {
    this.#options = options
    this.#appender = new Appender(options.logger, 'the partition files')
  }

  /** Commit-log mode: logged bytes held in memory, not yet written to their files. */
  get deferredBytes (): number {
    return this.#deferredBytes
  }

  append (folder: string, period: string, lines: readonly Buffer[]): Promise<void> {
    let file = this.#active.get(folder)
    if (file !== undefined && file.period !== period) {
      this.#retire(file)
      file = undefined
    }
    if (file === undefined) {
      file = this.#create(folder, period)
    } else {
      // Keep the map in least-recently-used order for the active-file cap.
      this.#active.delete(folder)
      this.#active.set(folder, file)
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

  /** Seals files of another period than `currentPeriod`, and those older than flushEveryS. */
  sealExpired (currentPeriod: string): void {
    const { flushEveryS, now } = this.#options
    const limit = flushEveryS > 0 ? now() - flushEveryS * 1000 : Number.NEGATIVE_INFINITY
    for (const file of [...this.#active.values()]) {
      if (file.openedAt <= limit || file.period !== currentPeriod) this.#retire(file)
    }
  }

  /** Commits everything appended so far and seals every open file. */
  async flush (): Promise<void> {
    for (const file of [...this.#active.values()]) this.#retire(file)
    await this.#whenIdle()
  }

  #create (folder: string, period: string): OpenFile {
    const { journal, fileName, now, maxActiveFiles } = this.#options
    if (this.#active.size >= maxActiveFiles) {
      const oldest = this.#active.values().next().value
      if (oldest !== undefined) this.#retire(oldest)
    }
    const seq = journal.nextSeq()
    const file = new OpenFile(seq, `${folder}/${fileName(seq)}`, folder, period, now())
    this.#active.set(folder, file)
    this.stats.activeFiles = this.#active.size
    return file
  }

  #retire (file: OpenFile): void {
    if (file.retired) return
    file.retired = true
    if (this.#active.get(file.folder) === file) this.#active.delete(file.folder)
    this.stats.activeFiles = this.#active.size
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
    try {
      while (this.#dirty.size > 0) {
        // Bound the pipeline: at most pipelinedCommits commits wait on their syncs.
        while (this.#syncing.size >= this.#options.pipelinedCommits) await Promise.race(this.#syncing)
        const files = [...this.#dirty]
        this.#dirty.clear()
        this.stats.commits++
        // Write in waves no larger than the descriptor cap; each wave's syncs start at once.
        for (let i = 0; i < files.length; i += this.#options.maxOpenFiles) {
          const wave = files.slice(i, i + this.#options.maxOpenFiles)
          const taken = (await Promise.all(wave.map(async (file) => await this.#take(file)))).filter((t): t is Taken => t !== undefined)
          if (this.#options.commitLog !== undefined && this.#options.durability === 'fsync') {
            await this.#logged(taken, this.#options.commitLog)
          } else {
            const written = await Promise.all(taken.map(async (t) => await this.#write(t)))
            this.#sync(written.filter((w): w is Written => w !== undefined))
          }
          for (const file of wave) this.#sealWhenDone(file)
        }
      }
    } catch (err) {
      this.#options.logger.error({ err }, 'commit loop failed')
    } finally {
      this.#committing = false
      this.#checkIdle()
    }
  }

  /**
   * Takes a file's pending lines and its descriptor for this commit. The file stays busy (its
   * descriptor cannot be closed) until the lines are durable.
   */
  async #take (file: OpenFile): Promise<Taken | undefined> {
    const waiter = file.waiter
    const lines = file.pending
    const count = file.pendingLines
    file.waiter = undefined
    file.pending = []
    file.pendingBytes = 0
    file.pendingLines = 0
    if (lines.length === 0) return undefined
    const started = performance.now()
    file.busy++
    try {
      if (file.failed) throw new Error('the file failed earlier')
      // With a commit log only a new file needs its descriptor now (its creation must be journalled
      // before its first record); other files are written when they have one, or later.
      if (this.#options.commitLog === undefined || this.#options.durability !== 'fsync' || !file.created) await this.#descriptor(file)
      const { compression } = this.#options
      const data = compression === 'none' ? lines : [await compressLines(compression, lines, this.#options.zstdLevel)]
      let bytes = 0
      for (const d of data) bytes += d.length
      return { file, waiter, started, data, bytes, count }
    } catch (err) {
      file.busy--
      this.#fail(file, err)
      waiter?.reject(err)
      return undefined
    }
  }

  /** Appends taken lines to their file; returns what its sync must resolve. */
  async #write (taken: Taken): Promise<Written | undefined> {
    const { file } = taken
    try {
      await this.#appender.write(file.handle as FileHandle, taken.data)
      file.size += taken.bytes
      file.written += taken.bytes
      this.stats.bytesWritten += taken.bytes
      this.stats.linesWritten += taken.count
      this.#options.onWritten?.(taken.bytes)
      return taken
    } catch (err) {
      file.busy--
      this.#fail(file, err)
      taken.waiter?.reject(err)
      return undefined
    }
  }

  /**
   * Commit-log mode: one log append and sync makes the whole wave durable; the files are then
   * written without a sync of their own (a checkpoint syncs them later).
   */
  async #logged (taken: Taken[], log: CommitLog): Promise<void> {
    if (taken.length === 0) return
    try {
      await log.append(taken.map((t) => ({ key: t.file.key, offset: t.file.size, data: t.data })))
      this.stats.syncs++
    } catch (err) {
      for (const t of taken) {
        t.file.busy--
        this.#fail(t.file, err)
        t.waiter?.reject(err)
      }
      return
    }
    // Durable now: answer, then write to the files that have a descriptor (or too much waiting).
    for (const t of taken) {
      const { file } = t
      file.unwritten.push(...t.data)
      file.unwrittenBytes += t.bytes
      this.#deferredBytes += t.bytes
      file.size += t.bytes
      this.stats.linesWritten += t.count
      this.#unsynced.add(file)
      t.waiter?.resolve()
      this.#options.onSynced?.((performance.now() - t.started) / 1000)
    }
    await Promise.all(taken.map(async ({ file }) => {
      try {
        if (file.handle !== undefined || file.unwrittenBytes >= DEFERRED_WRITE_LIMIT) await this.#writeUnwritten(file)
      } catch {
        // Logged and handled by #writeUnwritten: the events are safe in the log.
      } finally {
        file.busy--
      }
    }))
    const { deferredMemoryBytes = DEFERRED_MEMORY_LIMIT } = this.#options
    if (this.#deferredBytes > deferredMemoryBytes) await this.#writeOutDeferred(deferredMemoryBytes / 4)
    const { checkpointBytes = 64 * 1024 * 1024, checkpointMs = 10_000 } = this.#options
    if (this.#checkpointing === undefined && (log.bytes >= checkpointBytes || Date.now() - log.startedAt >= checkpointMs)) {
      const files = this.#unsynced
      this.#unsynced = new Set()
      const previous = await log.rotate()
      this.#checkpointing = this.#checkpoint(files, previous, log).finally(() => {
        this.#checkpointing = undefined
        this.#checkIdle()
      })
    }
  }

  /**
   * Writes a file's logged-but-unwritten bytes. A failure here concerns events already acknowledged
   * (they are in the log): the log is then kept whole until a restart replays it.
   */
  async #writeUnwritten (file: OpenFile): Promise<void> {
    if (file.unwrittenBytes === 0) return await file.writing
    const data = file.unwritten
    const bytes = file.unwrittenBytes
    file.unwritten = []
    file.unwrittenBytes = 0
    this.#deferredBytes -= bytes
    // Writes of one file in the order their bytes were taken, even through the thread pool.
    const write = file.writing.then(async () => {
      file.busy++
      try {
        await this.#appender.write(await this.#descriptor(file), data)
      } finally {
        file.busy--
      }
    })
    file.writing = write.catch(() => {})
    try {
      await write
      file.written += bytes
      this.stats.bytesWritten += bytes
      this.#options.onWritten?.(bytes)
    } catch (err) {
      this.#pinLog = true
      this.#fail(file, err)
      throw err
    }
  }

  /**
   * Writes out the files holding the most deferred bytes until at most `target` are left (a
   * quarter of the limit: fewer, larger writes than stopping just under it).
   */
  async #writeOutDeferred (target: number): Promise<void> {
    const largest = [...this.#unsynced].filter((f) => f.unwrittenBytes > 0).sort((a, b) => b.unwrittenBytes - a.unwrittenBytes)
    for (const file of largest) {
      if (this.#deferredBytes <= target) break
      try {
        await this.#writeUnwritten(file)
      } catch {
        // Logged and handled by #writeUnwritten: the events are safe in the log.
      }
    }
  }

  /** Syncs the files a finished log segment covers, then deletes the segment. */
  async #checkpoint (files: Set<OpenFile>, segment: number, log: CommitLog): Promise<void> {
    try {
      for (const file of files) {
        if (file.sealed || !file.created) continue // sealing synced it
        file.busy++
        const sync = (async () => {
          try {
            await this.#writeUnwritten(file)
            await (await this.#descriptor(file)).datasync()
          } finally {
            file.busy--
          }
        })()
        file.syncs.add(sync)
        try {
          await sync
        } finally {
          file.syncs.delete(sync)
        }
      }
      if (!this.#pinLog) await log.remove(segment)
    } catch (err) {
      // The segment stays: a restart replays it, which is harmless.
      this.#options.logger.error({ err }, 'checkpoint failed; the commit log segment is kept')
    }
  }

  /** Syncs what a commit wrote, then answers its requests; the commit loop does not wait. */
  #sync (written: Written[]): void {
    if (written.length === 0) return
    if (this.#options.durability === 'write') {
      for (const w of written) {
        w.file.busy--
        w.waiter?.resolve()
        this.#options.onSynced?.((performance.now() - w.started) / 1000)
      }
      return
    }
    const done = Promise.all(written.map(async (w) => {
      const { file } = w
      const sync = (async () => {
        try {
          await (file.handle as FileHandle).datasync()
          this.stats.syncs++
          w.waiter?.resolve()
          this.#options.onSynced?.((performance.now() - w.started) / 1000)
        } catch (err) {
          this.#fail(file, err)
          w.waiter?.reject(err)
        } finally {
          file.busy--
        }
      })()
      file.syncs.add(sync)
      await sync
      file.syncs.delete(sync)
    })).then(() => {})
    this.#syncing.add(done)
    void done.finally(() => {
      this.#syncing.delete(done)
      this.#checkIdle()
    })
  }

  #fail (file: OpenFile, err: unknown): void {
    if (!file.failed) {
      file.failed = true
      this.#options.logger.error({ err, key: file.key }, 'writing events failed')
      this.#options.onError?.(err)
    }
    this.#retire(file)
  }

  /** A retired file is sealed once its last write and syncs are done. */
  #sealWhenDone (file: OpenFile): void {
    if (!file.retired || file.sealed || file.pending.length > 0) return
    file.sealed = true
    const sealing = Promise.all(file.syncs).then(async () => await this.#seal(file)).catch((err: unknown) => {
      this.#options.logger.error({ err, key: file.key }, 'sealing a file failed; recovery will look at it on restart')
    })
    this.#sealing.add(sealing)
    void sealing.finally(() => {
      this.#sealing.delete(sealing)
      this.#checkIdle()
    })
  }

  async #seal (file: OpenFile): Promise<void> {
    const path = this.#options.localPath(file.key)
    if (file.created) {
      // The file stays open (or is reopened, within the descriptor cap) to cut a failed write and sync.
      if (!file.failed) await this.#writeUnwritten(file)
      file.busy++
      const handle = await this.#descriptor(file).finally(() => { file.busy-- })
      this.#release(file)
      try {
        if (file.failed) await handle.truncate(file.written)
        await handle.datasync()
      } finally {
        await handle.close()
      }
    }
    await this.#options.journal.sealed(file.seq)
    if (file.created) {
      this.stats.filesSealed++
      this.#options.onSealed?.({ seq: file.seq, key: file.key, path, size: file.size, openedAt: file.openedAt })
    }
  }

  /** The file's descriptor, opening (or creating) it and closing the least recently used beyond the cap. */
  async #descriptor (file: OpenFile): Promise<FileHandle> {
    if (file.handle !== undefined) {
      this.#descriptors.delete(file)
      this.#descriptors.add(file)
      return file.handle
    }
    // A commit and a checkpoint may ask at once: one descriptor, not two.
    file.opening ??= this.#openDescriptor(file).finally(() => { file.opening = undefined })
    return await file.opening
  }

  async #openDescriptor (file: OpenFile): Promise<FileHandle> {
    while (this.#descriptors.size + this.#inTransit >= this.#options.maxOpenFiles) {
      let idle: OpenFile | undefined
      for (const f of this.#descriptors) {
        if (f.busy === 0) {
          idle = f
          break
        }
      }
      if (idle === undefined) {
        // Every descriptor is in use by this commit or an earlier one still syncing: wait a turn.
        await new Promise((resolve) => setImmediate(resolve))
        continue
      }
      const handle = idle.handle as FileHandle
      this.#release(idle)
      this.#inTransit++
      try {
        await handle.close()
      } finally {
        this.#inTransit--
      }
    }
    this.#inTransit++
    try {
      if (file.created) file.handle = await open(this.#options.localPath(file.key), 'a')
      else await this.#createFile(file)
    } finally {
      this.#inTransit--
    }
    this.#descriptors.add(file)
    this.stats.openFiles = this.#descriptors.size
    return file.handle as FileHandle
  }

  #release (file: OpenFile): void {
    file.handle = undefined
    this.#descriptors.delete(file)
    this.stats.openFiles = this.#descriptors.size
  }

  async #createFile (file: OpenFile): Promise<void> {
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
      file.created = true
      await syncNewFolders(dirname(path), created)
      this.stats.filesOpened++
      return
    }
  }

  #checkIdle (): void {
    if (this.#committing || this.#scheduled || this.#dirty.size > 0 || this.#syncing.size > 0 || this.#sealing.size > 0 || this.#checkpointing !== undefined) return
    const idle = this.#idle
    this.#idle = undefined
    idle?.resolve()
  }

  async #whenIdle (): Promise<void> {
    if (!this.#committing && !this.#scheduled && this.#dirty.size === 0 && this.#syncing.size === 0 && this.#sealing.size === 0 && this.#checkpointing === undefined) return
    await (this.#idle ??= new Deferred()).promise
  }
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
