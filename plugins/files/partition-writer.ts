import { mkdir, open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { foldersOfNewFile, fsyncDirs } from '../fs-sync.js'
import { Appender } from './appender.js'
import { compressLines } from './compression.js'
import type { CommitLog } from './commit-log.js'
import { Batch, OpenFile, type CommitContext, type CommitMode, type Counters, type Taken, type WriterStats } from './commit-mode.js'
import { Deferred } from './deferred.js'
import { DescriptorCache } from './descriptor-cache.js'
import { DirectCommit } from './direct-commit.js'
import type { Journal } from './journal.js'
import { LoggedCommit } from './logged-commit.js'

export type { WriterStats } from './commit-mode.js'

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
  /** Commit-log mode: deferred bytes held in memory at most, all files together (24 MiB). */
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
  /**
   * Called once a file is complete, closed and durable, before the journal records it as sealed:
   * if it fails, the file stays unsealed in the journal and the next start recovers it.
   */
  beforeSealed?(file: SealedFile): Promise<void> | void
}

export interface SealedFile {
  readonly seq: number
  readonly key: string
  readonly path: string
  readonly size: number
  /** When the file was started: its oldest event is at most this old. */
  readonly openedAt: number
}

/**
 * Appends lines to one file per folder and time period, with group commit: lines appended while a
 * commit runs wait for the next one, and one commit serves every request in it (how it makes them
 * durable is its mode's business: direct-commit.ts or logged-commit.ts, chosen here once). The
 * promise `append` returns settles when the lines are durable (or written, with durability
 * `write`). Files are sealed by size, age, period change, the active-file cap (least recently used
 * first), and on flush; a sealed file is never written again. Descriptors live in a cache of their
 * own, capped by maxOpenFiles.
 */
export class PartitionWriter {
  readonly #options: WriterOptions
  readonly #active = new Map<string, OpenFile>()
  readonly #dirty = new Set<OpenFile>()
  readonly #sealing = new Set<Promise<boolean>>()
  readonly #descriptors: DescriptorCache<OpenFile>
  readonly #mode: CommitMode
  readonly #counters: Counters = { filesOpened: 0, filesSealed: 0, bytesWritten: 0, linesWritten: 0, commits: 0, syncs: 0, folderSyncs: 0 }
  /**
   * Folders whose entries are not durable yet (see CommitMode.defersFolderSync), writer-wide: a
   * folder one file made holds the path of the files made in it later. And the syncs under way.
   */
  readonly #pendingFolders = new Set<string>()
  readonly #syncingFolders = new Map<string, Promise<void>>()
  #committing = false
  #scheduled = false
  #idle: Deferred | undefined

  constructor (options: WriterOptions) {
    this.#options = options
    this.#descriptors = new DescriptorCache(options.maxOpenFiles, async (file) =>
      file.created ? await open(options.localPath(file.key), 'a') : await this.#createFile(file))
    const context: CommitContext = {
      descriptors: this.#descriptors,
      appender: new Appender(options.logger, 'the partition files'),
      counters: this.#counters,
      logger: options.logger,
      now: options.now,
      syncPendingFolders: async () => { await this.#syncFolders([...this.#pendingFolders, ...this.#syncingFolders.keys()]) },
      ...(options.onWritten !== undefined ? { onWritten: options.onWritten } : {}),
      ...(options.onSynced !== undefined ? { onSynced: options.onSynced } : {}),
      fail: (file, err) => { this.#fail(file, err) },
      settled: () => { this.#checkIdle() }
    }
    this.#mode = options.commitLog !== undefined && options.durability === 'fsync'
      ? new LoggedCommit(context, {
        log: options.commitLog,
        ...(options.checkpointBytes !== undefined ? { checkpointBytes: options.checkpointBytes } : {}),
        ...(options.checkpointMs !== undefined ? { checkpointMs: options.checkpointMs } : {}),
        ...(options.deferredMemoryBytes !== undefined ? { deferredMemoryBytes: options.deferredMemoryBytes } : {})
      })
      : new DirectCommit(context, options)
  }

  get stats (): WriterStats {
    return { openFiles: this.#descriptors.size, activeFiles: this.#active.size, ...this.#counters }
  }

  /** Commit-log mode: logged bytes held in memory, not yet written to their files. */
  get deferredBytes (): number {
    return this.#mode.deferredBytes
  }

  /** Appends lines to the file of `folder` in `period`, starting one if need be; settles once they are durable. */
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
    const batch = (file.batch ??= new Batch())
    for (const line of lines) {
      batch.lines.push(line)
      batch.bytes += line.length
    }
    this.#dirty.add(file)
    const { flushEveryBytes } = this.#options
    if (flushEveryBytes === 0 || file.size + batch.bytes >= flushEveryBytes) this.#retire(file)
    this.#schedule()
    return batch.done.promise
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
    return file
  }

  #retire (file: OpenFile): void {
    if (file.state !== 'active') return
    file.state = 'retired'
    if (this.#active.get(file.folder) === file) this.#active.delete(file.folder)
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
        // Lines appended while the mode holds the commit back join this one.
        await this.#mode.admit()
        const files = [...this.#dirty]
        this.#dirty.clear()
        this.#counters.commits++
        // In waves no larger than the descriptor cap.
        for (let i = 0; i < files.length; i += this.#options.maxOpenFiles) {
          const wave = files.slice(i, i + this.#options.maxOpenFiles)
          const taken = (await Promise.all(wave.map(async (file) => await this.#take(file)))).filter((t): t is Taken => t !== undefined)
          await this.#mode.commit(taken)
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

  /** Takes a file's batch for this commit, its file pinned until the batch is answered. */
  async #take (file: OpenFile): Promise<Taken | undefined> {
    const batch = file.batch
    file.batch = undefined
    if (batch === undefined) return undefined
    if (batch.lines.length === 0) {
      batch.done.resolve()
      return undefined
    }
    const started = performance.now()
    this.#descriptors.pin(file)
    try {
      // Lines that waited for a file that failed meanwhile fail with it.
      if (file.failure !== undefined) throw file.failure.error
      const handle = this.#mode.needsDescriptor(file) ? await this.#descriptors.get(file) : undefined
      const { compression } = this.#options
      const data = compression === 'none' ? batch.lines : [await compressLines(compression, batch.lines, this.#options.zstdLevel)]
      let bytes = 0
      for (const d of data) bytes += d.length
      return { file, done: batch.done, started, data, bytes, count: batch.lines.length, handle }
    } catch (err) {
      this.#descriptors.unpin(file)
      this.#fail(file, err)
      batch.done.reject(err)
      return undefined
    }
  }

  #fail (file: OpenFile, err: unknown): void {
    if (file.failure === undefined) {
      file.failure = { error: err }
      this.#options.logger.error({ err, key: file.key }, 'writing events failed')
      this.#options.onError?.(err)
    }
    this.#retire(file)
  }

  /** A retired file is sealed once its last write and syncs are done. */
  #sealWhenDone (file: OpenFile): void {
    if (file.state !== 'retired' || file.batch !== undefined) return
    file.state = 'sealed'
    const sealing = file.sealedDurably = Promise.all(file.syncs).then(async () => await this.#seal(file)).catch((err: unknown) => {
      this.#options.logger.error({ err, key: file.key }, 'sealing a file failed; recovery will look at it on restart')
      return false
    })
    this.#sealing.add(sealing)
    void sealing.finally(() => {
      this.#sealing.delete(sealing)
      this.#checkIdle()
    })
  }

  /** Resolves true once the file is sealed for good (see OpenFile.sealedDurably). */
  async #seal (file: OpenFile): Promise<boolean> {
    const path = this.#options.localPath(file.key)
    if (file.created) {
      // The file stays open (or is reopened, within the descriptor cap) to cut a failed write and sync.
      if (file.failure === undefined) await this.#mode.beforeSeal(file)
      const handle = await this.#descriptors.remove(file)
      try {
        if (file.failure !== undefined) await handle.truncate(file.written)
        await handle.datasync()
      } finally {
        await handle.close()
      }
      await this.#syncFoldersOf(file)
    }
    this.#mode.sealed(file)
    if (file.size > file.written) {
      // A write failed after its lines were acknowledged from the commit log (the mode pins the log
      // then): the file stays open in the journal, so the next start replays the log into it.
      this.#options.logger.error({ key: file.key, missing: file.size - file.written }, 'a file lacks acknowledged lines that the commit log holds: left for the next start to replay')
      return false
    }
    const sealed: SealedFile = { seq: file.seq, key: file.key, path, size: file.size, openedAt: file.openedAt }
    if (file.created) await this.#options.beforeSealed?.(sealed)
    await this.#options.journal.sealed(file.seq)
    if (file.created) {
      this.#counters.filesSealed++
      this.#options.onSealed?.(sealed)
    }
    return true
  }

  /** Creates the file exclusively, its creation journalled first; a taken name moves to the next number. */
  async #createFile (file: OpenFile): Promise<FileHandle> {
    const { journal, localPath, fileName } = this.#options
    await journal.opened(file.seq, file.key)
    for (;;) {
      const path = localPath(file.key)
      const created = await mkdir(dirname(path), { recursive: true })
      let handle: FileHandle
      try {
        handle = await open(path, 'ax')
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
      for (const folder of foldersOfNewFile(dirname(path), created)) this.#pendingFolders.add(folder)
      if (!this.#mode.defersFolderSync) await this.#syncFoldersOf(file)
      this.#counters.filesOpened++
      return handle
    }
  }

  /** The file's folder and every folder above it whose entries are not durable yet. */
  async #syncFoldersOf (file: OpenFile): Promise<void> {
    const chain: string[] = []
    for (let folder = dirname(this.#options.localPath(file.key)); ; folder = dirname(folder)) {
      chain.push(folder)
      if (folder === dirname(folder)) break
    }
    await this.#syncFolders(chain)
  }

  /**
   * Syncs those of `folders` still pending, two at a time (the thread pool has four threads), and
   * waits for the syncs of the others under way: a sync that began before a caller's change may
   * miss it, but a folder leaves the pending set when its sync begins, and every change re-adds it.
   */
  async #syncFolders (folders: Iterable<string>): Promise<void> {
    const toSync: string[] = []
    const waits = new Set<Promise<void>>()
    for (const folder of folders) {
      if (this.#pendingFolders.delete(folder)) {
        toSync.push(folder)
        continue
      }
      const under = this.#syncingFolders.get(folder)
      if (under !== undefined) waits.add(under)
    }
    if (toSync.length > 0) {
      const sync = fsyncDirs(toSync, 2)
      for (const folder of toSync) this.#syncingFolders.set(folder, sync)
      waits.add(sync)
      void sync.then(
        () => { this.#counters.folderSyncs += toSync.length },
        () => { for (const folder of toSync) this.#pendingFolders.add(folder) }
      ).finally(() => {
        for (const folder of toSync) if (this.#syncingFolders.get(folder) === sync) this.#syncingFolders.delete(folder)
      })
    }
    await Promise.all(waits)
  }

  #busy (): boolean {
    return this.#committing || this.#scheduled || this.#dirty.size > 0 || this.#sealing.size > 0 || !this.#mode.idle
  }

  #checkIdle (): void {
    if (this.#busy()) return
    const idle = this.#idle
    this.#idle = undefined
    idle?.resolve()
  }

  async #whenIdle (): Promise<void> {
    if (!this.#busy()) return
    await (this.#idle ??= new Deferred()).promise
  }
}
