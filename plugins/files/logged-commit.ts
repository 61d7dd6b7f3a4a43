import type { CommitLog } from './commit-log.js'
import type { CommitContext, CommitMode, OpenFile, Taken } from './commit-mode.js'

// A file without an open descriptor keeps up to this many logged bytes before they are written,
// so many partitions do not mean one open and close per request.
const DEFERRED_WRITE_LIMIT = 64 * 1024
/** Deferred bytes held in memory at most by default, all files together: beyond, the largest are written out. */
const DEFERRED_MEMORY_LIMIT = 24 * 1024 * 1024
const CHECKPOINT_BYTES = 64 * 1024 * 1024
const CHECKPOINT_MS = 10_000

export interface LoggedCommitOptions {
  log: CommitLog
  /** Files are synced, and the log segment they cover deleted, after this many bytes of log (64 MiB)... */
  checkpointBytes?: number
  /** ...or this long (10 s). */
  checkpointMs?: number
  /** Deferred bytes held in memory at most, all files together (24 MiB). */
  deferredMemoryBytes?: number
}

/** A file's logged bytes not yet written to it, and the write of them under way. */
interface Unwritten {
  data: Buffer[]
  bytes: number
  /** The last write of this file's bytes: the next one waits for it, so bytes land in log order. */
  writing: Promise<void>
}

/**
 * Commits by one append and sync of a write-ahead log, whatever the number of files touched:
 * the requests are answered then, and the files are written afterwards without a sync of their own
 * (at once when they have a descriptor, else once enough is waiting). Checkpoints sync the files a
 * finished log segment covers, then delete it; after a crash, recovery replays the log.
 */
export class LoggedCommit implements CommitMode {
  readonly #context: CommitContext
  readonly #log: CommitLog
  readonly #checkpointBytes: number
  readonly #checkpointMs: number
  readonly #deferredMemoryBytes: number
  readonly #unwritten = new Map<OpenFile, Unwritten>()
  /** Files written since the last checkpoint: their bytes are only in the log's current segment. */
  #unsynced = new Set<OpenFile>()
  #deferredBytes = 0
  #checkpointing: Promise<void> | undefined
  /** Deferred bytes being written out in the background (over deferredMemoryBytes). */
  #writingOut: Promise<void> | undefined
  /** A deferred write failed: keep every log segment, so a restart replays what the files lack. */
  #pinLog = false
  readonly defersFolderSync = true

  constructor (context: CommitContext, options: LoggedCommitOptions) {
    this.#context = context
    this.#log = options.log
    this.#checkpointBytes = options.checkpointBytes ?? CHECKPOINT_BYTES
    this.#checkpointMs = options.checkpointMs ?? CHECKPOINT_MS
    this.#deferredMemoryBytes = options.deferredMemoryBytes ?? DEFERRED_MEMORY_LIMIT
  }

  get idle (): boolean {
    return this.#checkpointing === undefined && this.#writingOut === undefined
  }

  get deferredBytes (): number {
    return this.#deferredBytes
  }

  async admit (): Promise<void> {}

  /**
   * Only a new file: its creation must be journalled before its first record is logged (its
   * folders are synced later, see defersFolderSync).
   */
  needsDescriptor (file: OpenFile): boolean {
    return !file.created
  }

  async commit (taken: readonly Taken[]): Promise<void> {
    if (taken.length === 0) return
    const context = this.#context
    try {
      await this.#log.append(taken.map((t) => ({ key: t.file.key, offset: t.file.size, data: t.data })))
      context.counters.syncs++
    } catch (err) {
      for (const t of taken) {
        context.descriptors.unpin(t.file)
        context.fail(t.file, err)
        t.done.reject(err)
      }
      return
    }
    // Durable now: answer, then write to the files that have a descriptor (or too much waiting).
    for (const t of taken) {
      const { file } = t
      const unwritten = this.#unwrittenOf(file)
      unwritten.data.push(...t.data)
      unwritten.bytes += t.bytes
      this.#deferredBytes += t.bytes
      file.size += t.bytes
      context.counters.linesWritten += t.count
      this.#unsynced.add(file)
      t.done.resolve()
      context.onSynced?.((performance.now() - t.started) / 1000)
    }
    await Promise.all(taken.map(async ({ file }) => {
      try {
        if (context.descriptors.has(file) || (this.#unwritten.get(file)?.bytes ?? 0) >= DEFERRED_WRITE_LIMIT) await this.#write(file)
      } catch {
        // Logged and handled by #write: the events are safe in the log.
      } finally {
        context.descriptors.unpin(file)
      }
    }))
    if (this.#deferredBytes > this.#deferredMemoryBytes / 2) {
      // In the background from half the limit: with thousands of files, writing them out takes
      // hundreds of ms, which the commits behind this one must not wait for. At the limit they do.
      this.#writingOut ??= this.#writeOutDeferred(this.#deferredMemoryBytes / 8).finally(() => {
        this.#writingOut = undefined
        context.settled()
      })
      if (this.#deferredBytes > this.#deferredMemoryBytes) await this.#writingOut
    }
    const log = this.#log
    if (this.#checkpointing === undefined && (log.bytes >= this.#checkpointBytes || context.now() - log.startedAt >= this.#checkpointMs)) {
      const files = this.#unsynced
      this.#unsynced = new Set()
      const previous = await log.rotate()
      this.#checkpointing = this.#checkpoint(files, previous).finally(() => {
        this.#checkpointing = undefined
        context.settled()
      })
    }
  }

  async beforeSeal (file: OpenFile): Promise<void> {
    await this.#write(file)
  }

  sealed (file: OpenFile): void {
    this.#unwritten.delete(file)
  }

  #unwrittenOf (file: OpenFile): Unwritten {
    let unwritten = this.#unwritten.get(file)
    if (unwritten === undefined) this.#unwritten.set(file, unwritten = { data: [], bytes: 0, writing: Promise.resolve() })
    return unwritten
  }

  /**
   * Writes a file's logged-but-unwritten bytes. A failure here concerns events already acknowledged
   * (they are in the log): the log is then kept whole until a restart replays it.
   */
  async #write (file: OpenFile): Promise<void> {
    // None: nothing was deferred, or the file was sealed meanwhile (a write-out's list is a snapshot).
    const unwritten = this.#unwritten.get(file)
    if (unwritten === undefined) return
    if (unwritten.bytes === 0) return await unwritten.writing
    const { data, bytes } = unwritten
    unwritten.data = []
    unwritten.bytes = 0
    this.#deferredBytes -= bytes
    const context = this.#context
    // Writes of one file in the order their bytes were taken, even through the thread pool.
    const write = unwritten.writing.then(async () => {
      context.descriptors.pin(file)
      try {
        await context.appender.write(await context.descriptors.get(file), data)
      } finally {
        context.descriptors.unpin(file)
      }
    })
    unwritten.writing = write.catch(() => {})
    try {
      await write
      file.written += bytes
      context.counters.bytesWritten += bytes
      context.onWritten?.(bytes)
    } catch (err) {
      this.#pinLog = true
      context.fail(file, err)
      throw err
    }
  }

  /**
   * Writes out the files holding the most deferred bytes until at most `target` are left (an
   * eighth of the limit: fewer, larger writes than stopping just under it).
   */
  async #writeOutDeferred (target: number): Promise<void> {
    const largest = [...this.#unsynced]
      .map((file) => ({ file, bytes: this.#unwritten.get(file)?.bytes ?? 0 }))
      .filter((f) => f.bytes > 0)
      .sort((a, b) => b.bytes - a.bytes)
    let next = 0
    // Two at a time: each is an open (within the descriptor cap) and a write in the thread pool.
    const worker = async (): Promise<void> => {
      while (next < largest.length && this.#deferredBytes > target) {
        const { file } = largest[next++] as { file: OpenFile }
        try {
          await this.#write(file)
        } catch {
          // Logged and handled by #write: the events are safe in the log.
        }
      }
    }
    await Promise.all([worker(), worker()])
  }

  /** Syncs the files a finished log segment covers, then deletes the segment. */
  async #checkpoint (files: Set<OpenFile>, segment: number): Promise<void> {
    const { descriptors, logger } = this.#context
    try {
      const queue = [...files]
      // Two files at a time: with thousands of partitions, one by one would outlast the next checkpoint.
      const worker = async (): Promise<void> => {
        for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
          if (!file.created) continue
          if (file.state === 'sealed') {
            // Sealing writes and syncs it: the segment may go only once that is done.
            if (await file.sealedDurably !== true) throw new Error(`${file.key} was not sealed durably`)
            continue
          }
          descriptors.pin(file)
          const sync = (async () => {
            try {
              await this.#write(file)
              await (await descriptors.get(file)).datasync()
            } finally {
              descriptors.unpin(file)
            }
          })()
          file.syncs.add(sync)
          try {
            await sync
          } finally {
            file.syncs.delete(sync)
          }
        }
      }
      // Both workers stop before the outcome counts: a failed one must not leave the other running.
      const failed = (await Promise.allSettled([worker(), worker()])).find((r) => r.status === 'rejected')
      if (failed !== undefined) throw failed.reason
      // The log let go of these files' events: their names must now survive a crash on their own.
      await this.#context.syncPendingFolders()
      if (!this.#pinLog) await this.#log.remove(segment)
    } catch (err) {
      // The segment stays: a restart replays it, which is harmless.
      logger.error({ err }, 'checkpoint failed; the commit log segment is kept')
    }
  }
}
