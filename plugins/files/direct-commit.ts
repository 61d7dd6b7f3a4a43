import type { FileHandle } from 'node:fs/promises'
import type { CommitContext, CommitMode, OpenFile, Taken } from './commit-mode.js'

/**
 * Commits by writing each touched file, then (durability `fsync`) one fdatasync per file. Up to
 * `pipelinedCommits` commits may be syncing at once: the next commit writes meanwhile.
 */
export class DirectCommit implements CommitMode {
  readonly #context: CommitContext
  readonly #fsync: boolean
  readonly #pipelinedCommits: number
  readonly #syncing = new Set<Promise<void>>()
  readonly deferredBytes = 0
  readonly defersFolderSync: boolean

  constructor (context: CommitContext, options: { durability: 'fsync' | 'write', pipelinedCommits: number }) {
    this.#context = context
    this.#fsync = options.durability === 'fsync'
    this.defersFolderSync = !this.#fsync
    this.#pipelinedCommits = options.pipelinedCommits
  }

  get idle (): boolean {
    return this.#syncing.size === 0
  }

  async admit (): Promise<void> {
    while (this.#syncing.size >= this.#pipelinedCommits) await Promise.race(this.#syncing)
  }

  needsDescriptor (): boolean {
    return true
  }

  async commit (taken: readonly Taken[]): Promise<void> {
    const written = await Promise.all(taken.map(async (t) => await this.#write(t)))
    this.#sync(written.filter((t): t is Taken => t !== undefined))
  }

  async beforeSeal (): Promise<void> {}

  sealed (): void {}

  /** Appends taken lines to their file; returns what its sync must settle. */
  async #write (taken: Taken): Promise<Taken | undefined> {
    const { file } = taken
    const context = this.#context
    try {
      // needsDescriptor(): the commit opened it.
      await context.appender.write(taken.handle as FileHandle, taken.data)
      file.size += taken.bytes
      file.written += taken.bytes
      context.counters.bytesWritten += taken.bytes
      context.counters.linesWritten += taken.count
      context.onWritten?.(taken.bytes)
      return taken
    } catch (err) {
      context.descriptors.unpin(file)
      context.fail(file, err)
      taken.done.reject(err)
      return undefined
    }
  }

  /** Syncs what a commit wrote, then answers its requests; the commit loop does not wait. */
  #sync (written: readonly Taken[]): void {
    if (written.length === 0) return
    const context = this.#context
    if (!this.#fsync) {
      for (const t of written) {
        context.descriptors.unpin(t.file)
        t.done.resolve()
        context.onSynced?.((performance.now() - t.started) / 1000)
      }
      return
    }
    const done = Promise.all(written.map(async (t) => {
      const file: OpenFile = t.file
      const sync = (async () => {
        try {
          await (t.handle as FileHandle).datasync()
          context.counters.syncs++
          t.done.resolve()
          context.onSynced?.((performance.now() - t.started) / 1000)
        } catch (err) {
          context.fail(file, err)
          t.done.reject(err)
        } finally {
          context.descriptors.unpin(file)
        }
      })()
      file.syncs.add(sync)
      await sync
      file.syncs.delete(sync)
    })).then(() => {})
    this.#syncing.add(done)
    void done.finally(() => {
      this.#syncing.delete(done)
      context.settled()
    })
  }
}
