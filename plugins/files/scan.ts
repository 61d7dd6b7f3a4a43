import {
  firstField, parseServerTimestamp, ROUTING_KEY_FIELDS, timestampAt, TOPIC_FIELDS, UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC,
  type QueryProblem, type QueryStats, type StoredEvent, type StoredRecord
} from '../../core/plugin-api.js'
import type { DecodedFile } from './formats.js'

const LF = 10
const CR = 13
const BACKSLASH = Buffer.from('\\')
/** The end of every line the server writes: `"serverTimestamp":"2026-11-26T02:47:43.123+0000"}`. */
const TIMESTAMP_KEY = Buffer.from('"serverTimestamp":"')
const TAIL_LENGTH = TIMESTAMP_KEY.length + 28 + 2
/** Lines longer than this are not events (the server's body limit is far below): reported and skipped. */
const MAX_LINE_BYTES = 256 * 1024 * 1024
/** Corrupt lines reported per file; the rest are only counted. */
const REPORTED_PER_FILE = 3

export interface ScanFilter {
  readonly from: number
  readonly to: number
  readonly where: ((event: StoredEvent) => boolean) | undefined
  readonly lineMustContain: ReadonlyArray<readonly Buffer[]> | undefined
  readonly stats: QueryStats
  readonly onProblem: (problem: QueryProblem) => void
}

export interface ScannedFile {
  readonly key: string
  /** Topic and routing key of its folder, decoded; undefined when the layout has none (or it was shortened). */
  readonly topic: string | undefined
  readonly routingKey: string | undefined
}

function objectOrEmpty (value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : {}
}

class StoredLine implements StoredEvent {
  readonly line: string
  readonly record: StoredRecord
  readonly time: number
  readonly source: string
  #topic: string | undefined
  #routingKey: string | undefined

  constructor (line: string, record: StoredRecord, time: number, file: ScannedFile) {
    this.line = line
    this.record = record
    this.time = time
    this.source = file.key
    this.#topic = file.topic
    this.#routingKey = file.routingKey
  }

  get topic (): string {
    this.#topic ??= firstField(objectOrEmpty(this.record.clientEvent), TOPIC_FIELDS) ?? UNKNOWN_TOPIC
    return this.#topic
  }

  get routingKey (): string {
    this.#routingKey ??= firstField(objectOrEmpty(this.record.clientEvent), ROUTING_KEY_FIELDS) ?? UNKNOWN_ROUTING_KEY
    return this.#routingKey
  }
}

/**
 * Finds the matching events in blocks of JSON lines. Lines are parsed only when they can match:
 * with `lineMustContain`, the block's bytes are searched for the strings (and for backslashes,
 * which may hide them behind escapes), and only the lines holding them are looked at; the time of
 * a line is read from its last 30 bytes, where the server writes `serverTimestamp`.
 */
export class LineScanner {
  readonly #filter: ScanFilter
  readonly #file: ScannedFile
  /** The inner list the block search starts from (the one whose strings are longest), then the others. */
  readonly #driver: readonly Buffer[] | undefined
  readonly #others: ReadonlyArray<readonly Buffer[]>
  #reported = 0

  constructor (filter: ScanFilter, file: ScannedFile) {
    this.#filter = filter
    this.#file = file
    const groups = filter.lineMustContain ?? []
    let best = -1
    let bestLength = -1
    groups.forEach((group, i) => {
      const shortest = Math.min(...group.map((n) => n.length))
      if (group.length > 0 && shortest > bestLength) {
        best = i
        bestLength = shortest
      }
    })
    this.#driver = best === -1 ? undefined : [...(groups[best] as Buffer[]), BACKSLASH]
    this.#others = groups.filter((_, i) => i !== best)
  }

  /**
   * Scans the complete lines of `b` from `start` to `end` (just after a line feed); `base` is the
   * offset of `b[0]` in the decoded file, for reports.
   */
  scan (b: Buffer, start: number, end: number, base: number, out: StoredEvent[]): void {
    this.#filter.stats.bytesScanned += end - start
    const driver = this.#driver
    if (driver === undefined) {
      let s = start
      while (s < end) {
        const e = b.indexOf(LF, s)
        this.#line(b, s, e, base, out)
        s = e + 1
      }
      return
    }
    const starts: number[] = []
    for (const needle of driver) {
      // A single byte is searched as a number: memchr rather than a string search.
      const what: Buffer | number = needle.length === 1 ? needle[0] as number : needle
      let pos = start
      for (;;) {
        const at = b.indexOf(what, pos)
        if (at === -1 || at >= end) break
        const s = at === start ? start : Math.max(start, b.lastIndexOf(LF, at) + 1)
        starts.push(s)
        pos = b.indexOf(LF, at) + 1
      }
    }
    if (driver.length > 1 && starts.length > 1) starts.sort((x, y) => x - y)
    let previous = -1
    for (const s of starts) {
      if (s === previous) continue
      previous = s
      const e = b.indexOf(LF, s)
      if (this.#others.length > 0 && !this.#holdsOthers(b.subarray(s, e))) continue
      this.#line(b, s, e, base, out)
    }
  }

  #holdsOthers (line: Buffer): boolean {
    if (line.indexOf(92) !== -1) return true
    return this.#others.every((group) => group.some((needle) => line.indexOf(needle) !== -1))
  }

  #line (b: Buffer, s: number, e: number, base: number, out: StoredEvent[]): void {
    if (e > s && b[e - 1] === CR) e--
    if (e <= s) return
    const { from, to, stats } = this.#filter
    let time = Number.NaN
    if (e - s > TAIL_LENGTH && b[e - 1] === 125 && b[e - 2] === 34 && b.compare(TIMESTAMP_KEY, 0, TIMESTAMP_KEY.length, e - TAIL_LENGTH, e - 30) === 0) {
      time = timestampAt(b, e - 30)
      if (time < from || time >= to) return
    }
    const text = b.toString('utf8', s, e)
    let record: StoredRecord
    try {
      stats.linesParsed++
      record = JSON.parse(text) as StoredRecord
    } catch (err) {
      this.#corrupt(base + s, `not JSON (${(err as Error).message})`)
      return
    }
    if (Number.isNaN(time)) {
      if (record === null || typeof record !== 'object' || typeof record.serverTimestamp !== 'string') {
        this.#corrupt(base + s, 'not a stored event (no serverTimestamp)')
        return
      }
      time = parseServerTimestamp(record.serverTimestamp)
      if (Number.isNaN(time)) {
        this.#corrupt(base + s, `unreadable serverTimestamp ${JSON.stringify(record.serverTimestamp).slice(0, 40)}`)
        return
      }
      if (time < from || time >= to) return
    }
    const event = new StoredLine(text, record, time, this.#file)
    if (this.#filter.where !== undefined && !this.#filter.where(event)) return
    out.push(event)
  }

  #corrupt (offset: number, message: string): void {
    this.#filter.stats.linesCorrupt++
    if (this.#reported++ < REPORTED_PER_FILE) {
      this.#filter.onProblem({ source: this.#file.key, message: `line at byte ${offset}: ${message}; skipped` })
    }
  }

  /**
   * The matching events of a decoded file, a block at a time. `complete()` is the number of bytes
   * of complete lines read so far: a last line without its line feed (a file being written) is not
   * read, and is counted in `filesPartial`.
   */
  async * events (decoded: DecodedFile, position: { complete: number }): AsyncGenerator<StoredEvent[]> {
    let carry: Buffer[] = []
    let carried = 0
    let seen = 0
    for await (const block of decoded.blocks) {
      const out: StoredEvent[] = []
      let from = 0
      if (carried > 0) {
        const nl = block.indexOf(LF)
        if (nl === -1) {
          carry.push(block)
          carried += block.length
          seen += block.length
          if (carried > MAX_LINE_BYTES) {
            this.#corrupt(seen - carried, `a line longer than ${MAX_LINE_BYTES} bytes`)
            throw new Error(`a line longer than ${MAX_LINE_BYTES} bytes at byte ${seen - carried}`)
          }
          continue
        }
        const line = Buffer.concat([...carry, block.subarray(0, nl + 1)])
        this.scan(line, 0, line.length, seen - carried, out)
        from = nl + 1
        carry = []
        carried = 0
        position.complete = seen + from
      }
      const last = block.lastIndexOf(LF)
      if (last >= from) {
        this.scan(block, from, last + 1, seen, out)
        position.complete = seen + last + 1
        from = last + 1
      }
      if (from < block.length) {
        // A copy: a view would keep the whole block in memory.
        carry.push(Buffer.from(block.subarray(from)))
        carried += block.length - from
      }
      seen += block.length
      if (out.length > 0) yield out
    }
    if (carried > 0 || decoded.truncated) this.#filter.stats.filesPartial++
  }
}
