import { mkdtemp, open as openFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  canAppend, encodeSegment, equalityNeedle, EVS_ERR_QUERY_DESTINATION, EVS_ERR_QUERY_STORE, newQueryStats, UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC, ZonedTime,
  type Connection, type DestinationReadContext, type EventQuery, type QueryProblem, type QueryStats, type StoredEvent, type StoredRecord
} from '../../core/plugin-api.js'
import { ChangeWatch, watchedPaths } from './follow-watch.js'
import { BlockPool, formatOf, START, type ReadCursor } from './formats.js'
import { layoutTemplate, type LayoutOptions } from './layout.js'
import { decodeSegment, ReadPlan, type PlannedFile } from './read-plan.js'
import { LineScanner, type ScanFilter } from './scan.js'

/** Bytes read at a time from a file. */
const BLOCK_BYTES = 1024 * 1024
/** `order: time`: files merged at once; beyond, runs of this many are merged into temporary files first. */
const MAX_MERGE = 64
/** With `follow`: how far back new files are looked for (object stores upload a partition's files after it ends). */
const FOLLOW_LOOKBACK_MS = 24 * 3_600_000
const FOLLOW_LOOKAHEAD_MS = 24 * 3_600_000
/** On the filesystem, changes are watched (follow-watch.ts): the poll is only a safety net. */
const FOLLOW_INTERVAL_LOCAL_MS = 5000
const FOLLOW_INTERVAL_STORE_MS = 10_000
/** A watched change starts a round at once, but not sooner than this after the previous one began: a burst of writes makes one round. */
const FOLLOW_MIN_ROUND_GAP_MS = 100

interface Reading {
  readonly pool: BlockPool
  readonly zone: ZonedTime
  readonly connection: Connection
  readonly stats: QueryStats
  readonly signal: AbortSignal | undefined
  readonly onProblem: (problem: QueryProblem) => void
  readonly filter: ScanFilter
}

function isAbort (err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || (err as Error)?.name === 'AbortError'
}

function missing (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'EVS_ERR_CONNECTION_NOT_FOUND'
}

/**
 * The matching events of one file, a block at a time, from `cursor`; `position.cursor` is where a
 * later read resumes. A file that cannot be read is reported and counted, never thrown.
 */
async function * fileEvents (reading: Reading, file: PlannedFile, cursor: ReadCursor, position: { cursor: ReadCursor }, blockBytes = BLOCK_BYTES): AsyncGenerator<StoredEvent[]> {
  const format = formatOf(file.key)
  if (format === undefined) return
  const { connection, stats, signal, pool, zone, filter: { from, to } } = reading
  const decoded = format.decode({ key: file.key, size: file.size, pool, zone, from, to, connection, stats, signal, blockBytes }, cursor)
  const scanner = new LineScanner(reading.filter, {
    key: file.key,
    topic: file.topic === undefined ? undefined : decodeSegment(file.topic),
    routingKey: file.routingKey === undefined ? undefined : decodeSegment(file.routingKey)
  })
  const complete = { complete: 0 }
  try {
    for await (const events of scanner.events(decoded, complete)) {
      position.cursor = decoded.resumeAt(complete.complete)
      yield events
    }
    position.cursor = decoded.resumeAt(complete.complete)
  } catch (err) {
    if (isAbort(err, reading.signal)) throw err
    position.cursor = decoded.resumeAt(complete.complete)
    if (missing(err)) return
    reading.stats.filesUnreadable++
    const e = err as Error & { code?: string }
    reading.onProblem({ source: file.key, message: `cannot be read${complete.complete > 0 ? ` past byte ${complete.complete}` : ''}: ${e.code !== undefined && !e.message.includes(e.code) ? `${e.code} ` : ''}${e.message}` })
  }
}

async function * flatten (batches: AsyncIterable<StoredEvent[]>): AsyncGenerator<StoredEvent> {
  for await (const batch of batches) yield * batch
}

/** A binary heap of sources by the time of their next event (then by source index: stable). */
class Heads {
  readonly #heap: Array<{ event: StoredEvent, index: number }> = []
  get size (): number { return this.#heap.length }
  #less (a: { event: StoredEvent, index: number }, b: { event: StoredEvent, index: number }): boolean {
    return a.event.time < b.event.time || (a.event.time === b.event.time && a.index < b.index)
  }

  push (item: { event: StoredEvent, index: number }): void {
    const heap = this.#heap
    heap.push(item)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.#less(heap[i] as typeof item, heap[parent] as typeof item)) break
      ;[heap[i], heap[parent]] = [heap[parent] as typeof item, heap[i] as typeof item]
      i = parent
    }
  }

  pop (): { event: StoredEvent, index: number } | undefined {
    const heap = this.#heap
    const top = heap[0]
    const last = heap.pop()
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < heap.length && this.#less(heap[l] as typeof last, heap[m] as typeof last)) m = l
        if (r < heap.length && this.#less(heap[r] as typeof last, heap[m] as typeof last)) m = r
        if (m === i) break
        ;[heap[i], heap[m]] = [heap[m] as typeof last, heap[i] as typeof last]
        i = m
      }
    }
    return top
  }
}

/** A k-way merge of event streams, each in time order, into one in time order. */
async function * merge (sources: Array<AsyncIterable<StoredEvent>>): AsyncGenerator<StoredEvent> {
  const iterators = sources.map((s) => s[Symbol.asyncIterator]())
  const heads = new Heads()
  try {
    await Promise.all(iterators.map(async (iterator, index) => {
      const next = await iterator.next()
      if (next.done !== true) heads.push({ event: next.value, index })
    }))
    while (heads.size > 0) {
      const { event, index } = heads.pop() as { event: StoredEvent, index: number }
      yield event
      const next = await (iterators[index] as AsyncIterator<StoredEvent>).next()
      if (next.done !== true) heads.push({ event: next.value, index })
    }
  } finally {
    await Promise.allSettled(iterators.map(async (iterator) => await iterator.return?.()))
  }
}

/** A merged run written to a temporary file, one event per line with its time, routing and source. */
async function writeRun (events: AsyncIterable<StoredEvent>, path: string): Promise<void> {
  const handle = await openFile(path, 'wx')
  try {
    let pending: string[] = []
    let bytes = 0
    for await (const e of events) {
      const text = `${JSON.stringify([e.time, e.topic, e.routingKey, e.source, e.line])}\n`
      pending.push(text)
      bytes += text.length
      if (bytes > BLOCK_BYTES) {
        await handle.write(pending.join(''))
        pending = []
        bytes = 0
      }
    }
    if (pending.length > 0) await handle.write(pending.join(''))
  } finally {
    await handle.close()
  }
}

async function * readRun (path: string): AsyncGenerator<StoredEvent> {
  const handle = await openFile(path, 'r')
  try {
    for await (const text of handle.readLines()) {
      const [time, topic, routingKey, source, line] = JSON.parse(text) as [number, string, string, string, string]
      yield { time, topic, routingKey, source, line, record: JSON.parse(line) as StoredRecord }
    }
  } finally {
    await handle.close()
  }
}

/** Files whose partitions overlap, in time order of their partitions: a group's events are all before the next group's. */
function groupsByTime (files: PlannedFile[]): PlannedFile[][] {
  const sorted = [...files].sort((a, b) => a.start - b.start || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  const groups: PlannedFile[][] = []
  let end = -Infinity
  for (const file of sorted) {
    const current = groups[groups.length - 1]
    if (current !== undefined && file.start < end) current.push(file)
    else groups.push([file])
    end = Math.max(end, file.end)
  }
  return groups
}

/** Events of files in time order: each group of overlapping partitions is merged, spilling runs of MAX_MERGE files to disk when larger. */
async function * inTimeOrder (reading: Reading, files: PlannedFile[], cursors?: Map<string, { cursor: ReadCursor }>): AsyncGenerator<StoredEvent> {
  for (const group of groupsByTime(files)) {
    const blockBytes = Math.max(64 * 1024, Math.min(BLOCK_BYTES, Math.floor(4 * BLOCK_BYTES / group.length)))
    let sources: Array<AsyncIterable<StoredEvent>> = group.map((file) => {
      const position = cursors?.get(file.key) ?? { cursor: START }
      if (cursors !== undefined && !cursors.has(file.key)) cursors.set(file.key, position)
      return flatten(fileEvents(reading, file, position.cursor, position, blockBytes))
    })
    if (sources.length <= MAX_MERGE) {
      yield * merge(sources)
      continue
    }
    const dir = await mkdtemp(join(tmpdir(), 'evs-query-'))
    try {
      let run = 0
      while (sources.length > MAX_MERGE) {
        const runs: Array<AsyncIterable<StoredEvent>> = []
        for (let i = 0; i < sources.length; i += MAX_MERGE) {
          const path = join(dir, `run-${run++}.jsonl`)
          await writeRun(merge(sources.slice(i, i + MAX_MERGE)), path)
          runs.push(readRun(path))
        }
        sources = runs
      }
      yield * merge(sources)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/**
 * Pulls batches of events from `source` ahead of its consumer, up to `max` events: the next files
 * are opened, read, decompressed (in the thread pool) and scanned while the current one is consumed.
 * With a selective filter, that is most of a file; without one, a few blocks.
 */
class Prefetch<T> {
  readonly #iterator: AsyncIterator<T[]>
  readonly #max: number
  readonly #queue: Array<{ value?: T[], done?: true, error?: unknown }> = []
  #queued = 0
  #pulling = false
  #ended = false
  #wake: (() => void) | undefined

  constructor (source: AsyncIterable<T[]>, max: number) {
    this.#iterator = source[Symbol.asyncIterator]()
    this.#max = max
    this.#pull()
  }

  #pull (): void {
    if (this.#pulling || this.#ended || this.#queued >= this.#max) return
    this.#pulling = true
    this.#iterator.next().then((result) => {
      this.#pulling = false
      if (result.done === true) {
        this.#ended = true
        this.#queue.push({ done: true })
      } else {
        this.#queue.push({ value: result.value })
        this.#queued += result.value.length
      }
      this.#wake?.()
      this.#pull()
    }, (error: unknown) => {
      this.#pulling = false
      this.#ended = true
      this.#queue.push({ error })
      this.#wake?.()
    })
  }

  async * drain (): AsyncGenerator<T[]> {
    for (;;) {
      while (this.#queue.length === 0) await new Promise<void>((resolve) => { this.#wake = resolve })
      this.#wake = undefined
      const item = this.#queue.shift() as { value?: T[], done?: true, error?: unknown }
      if (item.value !== undefined) this.#queued -= item.value.length
      this.#pull()
      if ('error' in item) throw item.error
      if (item.done === true) return
      yield item.value as T[]
    }
  }

  async close (): Promise<void> {
    this.#ended = true
    await this.#iterator.return?.()
  }
}

/** Files read at once (the current one and those ahead), each with this many events queued at most. */
const FILES_AHEAD = 4
const EVENTS_AHEAD = 2000

async function * inStoredOrder (reading: Reading, files: AsyncIterable<PlannedFile> | PlannedFile[], cursors?: Map<string, { cursor: ReadCursor }>): AsyncGenerator<StoredEvent> {
  const window: Array<Prefetch<StoredEvent>> = []
  const iterator = (Symbol.asyncIterator in files ? files[Symbol.asyncIterator]() : (files as PlannedFile[])[Symbol.iterator]()) as AsyncIterator<PlannedFile> | Iterator<PlannedFile>
  let listed = true
  const fill = async (): Promise<void> => {
    while (listed && window.length < FILES_AHEAD) {
      const next = await iterator.next()
      if (next.done === true) {
        listed = false
        return
      }
      const file = next.value
      const position = cursors?.get(file.key) ?? { cursor: START }
      if (cursors !== undefined && !cursors.has(file.key)) cursors.set(file.key, position)
      window.push(new Prefetch(fileEvents(reading, file, position.cursor, position), EVENTS_AHEAD))
    }
  }
  try {
    await fill()
    while (window.length > 0) {
      for await (const batch of (window[0] as Prefetch<StoredEvent>).drain()) yield * batch
      window.shift()
      await fill()
    }
  } finally {
    await Promise.allSettled(window.map(async (p) => await p.close()))
    await iterator.return?.()
  }
}

async function * listed (plan: ReadPlan, reading: Reading, name: string): AsyncGenerator<PlannedFile> {
  try {
    yield * plan.files(reading.connection, reading.stats, reading.signal)
  } catch (err) {
    if (isAbort(err, reading.signal)) throw err
    const e = err as Error & { code?: string }
    throw new EVS_ERR_QUERY_STORE(name, `${e.code !== undefined && !e.message.includes(e.code) ? `${e.code}: ` : ''}${e.message}`)
  }
}

async function sleep (ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0 || signal?.aborted === true) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/**
 * `read` of the files destination: lists only the folders of its layout that can hold events of
 * the query (time range, topics, routing keys), reads `.jsonl`, `.jsonl.gz`, `.jsonl.zst` and
 * `.parquet` files (see formats.ts) a block at a time, and parses only the lines that can match.
 */
export async function * readFilesDestination (options: LayoutOptions & { connection: string }, context: DestinationReadContext, query: EventQuery): AsyncGenerator<StoredEvent> {
  const connection = context.connection(options.connection)
  if (connection === undefined) throw new EVS_ERR_QUERY_DESTINATION(`Destination "${context.name}" uses connection "${options.connection}", which settings do not define`)
  const stats = query.stats ?? newQueryStats()
  const signal = query.signal
  const zone = new ZonedTime(context.timeZone)
  const template = layoutTemplate(options)
  const topicSet = query.topics === undefined ? undefined : new Set(query.topics)
  const routingKeySet = query.routingKeys === undefined ? undefined : new Set(query.routingKeys)
  const planFor = (from: number, to: number): ReadPlan => new ReadPlan({
    path: options.path,
    template,
    zone,
    from,
    to,
    topics: topicSet === undefined ? undefined : new Set([...topicSet].map(encodeSegment)),
    routingKeys: routingKeySet === undefined ? undefined : new Set([...routingKeySet].map(encodeSegment)),
    accept: (name) => !name.startsWith('.') && formatOf(name) !== undefined
  })
  const from = query.from ?? -Infinity
  const to = query.to ?? Infinity
  const plan = planFor(from, to)

  // A layout without a topic (or routing-key) folder: those filters test the events' own fields.
  const tests: Array<(event: StoredEvent) => boolean> = []
  const needles: Buffer[][] = [...(query.lineMustContain ?? []).map((g) => [...g])]
  for (const [set, inFolder, field, unknown] of [[topicSet, plan.hasTopic, 'topic', UNKNOWN_TOPIC], [routingKeySet, plan.hasRoutingKey, 'routingKey', UNKNOWN_ROUTING_KEY]] as const) {
    if (set === undefined || inFolder) continue
    tests.push((event) => set.has(event[field]))
    const group = [...set].map((v) => v === unknown ? undefined : equalityNeedle(v))
    if (group.every((n) => n !== undefined)) needles.push(group as Buffer[])
  }
  if (query.where !== undefined) tests.push(query.where)
  const reading: Reading = {
    pool: new BlockPool(),
    zone,
    connection,
    stats,
    signal,
    onProblem: query.onProblem ?? (() => {}),
    filter: {
      from,
      to,
      where: tests.length === 0 ? undefined : tests.length === 1 ? tests[0] : (event) => tests.every((t) => t(event)),
      lineMustContain: needles.length > 0 ? needles : undefined,
      stats,
      onProblem: query.onProblem ?? (() => {})
    }
  }

  let remaining = query.limit ?? Infinity
  if (remaining <= 0) return
  let watch: ChangeWatch | undefined
  try {
    if (query.follow === undefined) {
      const events = query.order === 'time'
        ? inTimeOrder(reading, await collect(listed(plan, reading, context.name)))
        : inStoredOrder(reading, listed(plan, reading, context.name))
      for await (const event of events) {
        stats.eventsMatched++
        yield event
        if (--remaining <= 0) return
      }
      return
    }

    // Follow: list again at each round (on the filesystem, as soon as a watched folder or file
    // changes; else every interval); read new files, and files that grew from where their last
    // read stopped.
    const started = context.now()
    const lowerBound = query.from ?? started
    const followReading: Reading = { ...reading, filter: { ...reading.filter, from: lowerBound } }
    const interval = query.follow.intervalMs ?? (connection.capabilities.append ? FOLLOW_INTERVAL_LOCAL_MS : FOLLOW_INTERVAL_STORE_MS)
    const cursors = new Map<string, { cursor: ReadCursor, size?: number, end: number }>()
    const local = canAppend(connection) ? connection : undefined
    watch = local === undefined ? undefined : new ChangeWatch()
    const rootKey = options.path.split('/').filter((s) => s !== '').join('/')
    let first = true
    while (signal?.aborted !== true) {
      const roundStarted = performance.now()
      const now = context.now()
      const roundFrom = first ? lowerBound : Math.max(lowerBound, now - FOLLOW_LOOKBACK_MS)
      const roundTo = Math.min(to, now + FOLLOW_LOOKAHEAD_MS)
      let files: PlannedFile[] = []
      try {
        if (roundFrom < roundTo) files = await collect(listed(planFor(roundFrom, roundTo), followReading, context.name))
      } catch (err) {
        // The first listing's failure ends the query; later ones (a store blip) are reported and retried.
        if (first || isAbort(err, signal)) throw err
        reading.onProblem({ source: context.name, message: `${(err as Error).message}; trying again in ${interval / 1000} s` })
      }
      first = false
      // Watches set after this listing: a change made in between is caught by one more round at once.
      if (local !== undefined && watch !== undefined && watch.set(watchedPaths(local, rootKey, files, now)) > 0) watch.touch()
      const changed = files.filter((f) => cursors.get(f.key)?.size !== f.size)
      for (const file of changed) {
        const entry = cursors.get(file.key)
        if (entry === undefined) cursors.set(file.key, { cursor: START, size: file.size, end: file.end })
        else entry.size = file.size
      }
      const events = query.order === 'time' ? inTimeOrder(followReading, changed, cursors) : inStoredOrder(followReading, changed, cursors)
      for await (const event of events) {
        stats.eventsMatched++
        yield event
        if (--remaining <= 0) return
      }
      for (const [key, entry] of cursors) if (entry.end < now - FOLLOW_LOOKBACK_MS) cursors.delete(key)
      if (watch === undefined) {
        await sleep(interval, signal)
      } else {
        await watch.wait(interval, signal)
        await sleep(FOLLOW_MIN_ROUND_GAP_MS - (performance.now() - roundStarted), signal)
      }
    }
  } catch (err) {
    if (isAbort(err, signal)) return
    throw err
  } finally {
    watch?.close()
  }
}

async function collect<T> (items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of items) out.push(item)
  return out
}
