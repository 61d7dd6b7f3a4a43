import { mkdir, open, readdir, readFile, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { fsyncDir } from '../fs-sync.js'
import { Appender, type SlowWriteLogger } from './appender.js'

/** One write to a partition file: its bytes, and where they go. */
export interface LogRecord {
  key: string
  offset: number
  data: Buffer[]
}

const MAGIC = 0x45565357 // "EVSW"
const HEADER = 24 // magic, length, crc, key length: 4 bytes each; offset: 8 bytes

function segmentName (n: number): string {
  return `${String(n).padStart(12, '0')}.log`
}

/**
 * A write-ahead log of partition writes. With it, a commit syncs one file (the log) however many
 * partition files it touched; the partition files are synced later, at checkpoints, and a crash
 * in between is repaired by replaying the log into them. Records are checksummed: a torn last
 * record (never acknowledged) ends the replay.
 */
export class CommitLog {
  readonly dir: string
  #segment = 0
  #handle: FileHandle | undefined
  #bytes = 0
  #startedAt = 0

  readonly #appender: Appender
  readonly #now: () => number

  /** `now`: milliseconds since the epoch, for the age of the current segment. */
  constructor (dir: string, logger: SlowWriteLogger, now: () => number) {
    this.#appender = new Appender(logger, 'the commit log')
    this.dir = dir
    this.#now = now
  }

  get bytes (): number {
    return this.#bytes
  }

  /** When the current segment was started (`now()` milliseconds). */
  get startedAt (): number {
    return this.#startedAt
  }

  /** Segments on disk, oldest first. */
  async segments (): Promise<number[]> {
    let names: string[]
    try {
      names = await readdir(this.dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    return names.filter((n) => /^\d{12}\.log$/.test(n)).map((n) => Number(n.slice(0, 12))).sort((a, b) => a - b)
  }

  /**
   * Calls `apply` for every whole record of every segment, in order. Returns the number of
   * records read and whether a torn or corrupt record was met (which ends that segment).
   */
  async replay (apply: (key: string, offset: number, data: Buffer) => Promise<void>): Promise<{ records: number, torn: boolean }> {
    let records = 0
    let torn = false
    for (const n of await this.segments()) {
      const data = await readFile(join(this.dir, segmentName(n)))
      let at = 0
      while (at < data.length) {
        if (at + HEADER > data.length || data.readUInt32LE(at) !== MAGIC) { torn = true; break }
        const length = data.readUInt32LE(at + 4)
        if (length < HEADER || at + length > data.length) { torn = true; break }
        const keyLength = data.readUInt32LE(at + 12)
        if (crc32(data.subarray(at + 12, at + length)) !== data.readUInt32LE(at + 8)) { torn = true; break }
        const offset = Number(data.readBigUInt64LE(at + 16))
        const key = data.toString('utf8', at + HEADER, at + HEADER + keyLength)
        await apply(key, offset, data.subarray(at + HEADER + keyLength, at + length))
        records++
        at += length
      }
    }
    return { records, torn }
  }

  /** Starts a new segment after the last one on disk. */
  async start (): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    const existing = await this.segments()
    this.#segment = (existing.at(-1) ?? 0) + 1
    await this.#openSegment()
  }

  async #openSegment (): Promise<void> {
    this.#handle = await open(join(this.dir, segmentName(this.#segment)), 'ax')
    await fsyncDir(this.dir)
    this.#bytes = 0
    this.#startedAt = this.#now()
  }

  /** Appends records and syncs them: once this resolves, they survive a crash. */
  async append (records: readonly LogRecord[]): Promise<void> {
    const buffers: Buffer[] = []
    let total = 0
    for (const record of records) {
      const key = Buffer.from(record.key)
      let dataLength = 0
      for (const d of record.data) dataLength += d.length
      const header = Buffer.allocUnsafe(HEADER)
      const length = HEADER + key.length + dataLength
      header.writeUInt32LE(MAGIC, 0)
      header.writeUInt32LE(length, 4)
      header.writeUInt32LE(key.length, 12)
      header.writeBigUInt64LE(BigInt(record.offset), 16)
      let crc = crc32(header.subarray(12))
      crc = crc32(key, crc)
      for (const d of record.data) crc = crc32(d, crc)
      header.writeUInt32LE(crc, 8)
      buffers.push(header, key, ...record.data)
      total += length
    }
    const handle = this.#handle as FileHandle
    await this.#appender.write(handle, buffers)
    await handle.datasync()
    this.#bytes += total
  }

  /** Switches to a new segment; returns the previous one, to be deleted once its writes are synced. */
  async rotate (): Promise<number> {
    const previous = this.#segment
    await this.#handle?.close()
    this.#segment++
    await this.#openSegment()
    return previous
  }

  async remove (segment: number): Promise<void> {
    await rm(join(this.dir, segmentName(segment)), { force: true })
    await fsyncDir(this.dir)
  }

  /** Removes every segment: call only once every partition write they hold is synced. */
  async clear (): Promise<void> {
    for (const n of await this.segments()) await rm(join(this.dir, segmentName(n)), { force: true })
    await fsyncDir(this.dir).catch(() => {})
  }

  async close (): Promise<void> {
    await this.#handle?.close()
    this.#handle = undefined
  }
}
