import { open, readFile, rename, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { fsyncDir } from '../fs-sync.js'
import { Deferred } from './deferred.js'

/** One file this writer created: its sequence number and key, and whether it was sealed. */
export interface JournalEntry {
  readonly seq: number
  readonly key: string
}

type Record_ =
  | { next: number }
  | { open: number, key: string }
  | { sealed: number }

const COMPACT_AFTER = 10_000

/**
 * The destination's durable memory, one JSON record a line: the next sequence number, the files it
 * opened and the ones it sealed. File names derive from sequence numbers, so a number is never used
 * twice, even across crashes; files opened but not sealed are what recovery must look at.
 * Concurrent records share one write and one fsync.
 */
export class Journal {
  readonly path: string
  readonly #entries = new Map<number, JournalEntry>()
  #next = 1
  #handle: FileHandle | undefined
  #lines = 0
  #pending: string[] = []
  #waiter: Deferred | undefined
  #writing: Promise<void> | undefined

  private constructor (dir: string) {
    this.path = join(dir, 'journal.jsonl')
  }

  static async load (dir: string): Promise<Journal> {
    const journal = new Journal(dir)
    let text = ''
    try {
      text = await readFile(journal.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    for (const line of text.split('\n')) {
      if (line === '') continue
      let record: Record_
      try {
        record = JSON.parse(line) as Record_
      } catch {
        continue // a torn last record: it was never acknowledged to anyone
      }
      journal.#apply(record)
    }
    await journal.compact()
    return journal
  }

  #apply (record: Record_): void {
    if ('next' in record) {
      this.#next = Math.max(this.#next, record.next)
    } else if ('open' in record) {
      this.#entries.set(record.open, { seq: record.open, key: record.key })
      this.#next = Math.max(this.#next, record.open + 1)
    } else if ('sealed' in record) {
      this.#entries.delete(record.sealed)
    }
  }

  /** Files opened and not sealed, oldest first. */
  unsealed (): JournalEntry[] {
    return [...this.#entries.values()].sort((a, b) => a.seq - b.seq)
  }

  /** Reserves a sequence number; it is durable once `opened` resolves. */
  nextSeq (): number {
    return this.#next++
  }

  async opened (seq: number, key: string): Promise<void> {
    this.#entries.set(seq, { seq, key })
    await this.#append({ open: seq, key })
  }

  async sealed (seq: number): Promise<void> {
    this.#entries.delete(seq)
    await this.#append({ sealed: seq })
  }

  /** Rewrites the journal with only what is still needed, atomically. */
  async compact (): Promise<void> {
    await this.#writing
    await this.#rewrite()
  }

  async #rewrite (): Promise<void> {
    await this.#handle?.close()
    this.#handle = undefined
    const records: Record_[] = [{ next: this.#next }, ...this.unsealed().map((e) => ({ open: e.seq, key: e.key }))]
    const temp = `${this.path}.tmp`
    const handle = await open(temp, 'w')
    try {
      await handle.writeFile(records.map((r) => JSON.stringify(r) + '\n').join(''))
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, this.path)
    await fsyncDir(join(this.path, '..'))
    this.#lines = records.length
  }

  async close (): Promise<void> {
    await this.compact()
  }

  async #append (record: Record_): Promise<void> {
    this.#pending.push(JSON.stringify(record) + '\n')
    const waiter = (this.#waiter ??= new Deferred())
    if (this.#writing === undefined) this.#writing = this.#drain()
    await waiter.promise
  }

  async #drain (): Promise<void> {
    while (this.#pending.length > 0) {
      const lines = this.#pending
      const waiter = this.#waiter as Deferred
      this.#pending = []
      this.#waiter = undefined
      try {
        this.#handle ??= await open(this.path, 'a')
        await this.#handle.write(lines.join(''))
        await this.#handle.datasync()
        this.#lines += lines.length
        waiter.resolve()
      } catch (err) {
        waiter.reject(err)
      }
      if (this.#lines > COMPACT_AFTER) await this.#rewrite().catch(() => {})
    }
    this.#writing = undefined
  }
}
