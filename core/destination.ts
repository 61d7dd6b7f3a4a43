import type { FastifyBaseLogger } from 'fastify'
import type { Static, TSchema } from '@sinclair/typebox'
import type { Connection } from './connection.js'
import type { SettingsProblem } from './validation.js'

/** One event after routing. `line` is shared by every destination that takes the event: never mutate it. */
export interface RoutedEvent {
  readonly topic: string
  readonly routingKey: string
  /** `{"clientEvent":…,"origAddress":…,"serverTimestamp":…}` followed by `\n`, UTF-8. */
  readonly line: Buffer
  /** Reception time, milliseconds since the epoch. */
  readonly receivedAt: number
}

/**
 * Receives the events routed to it. The server answers a request with 2xx only once every
 * destination that took some of its events resolved `accept`: resolve only when the events are as
 * durable as the destination promises (for files: fsync'ed, unless configured otherwise).
 */
export interface Destination {
  readonly name: string
  /** Runs once before the server listens: recover what a crash left behind. */
  open(): Promise<void>
  accept(events: readonly RoutedEvent[]): Promise<void>
  /** Makes everything accepted so far durable and complete (files sealed, uploads done where possible). */
  flush(): Promise<void>
  /**
   * Flushes, then releases every resource. No `accept` follows. On `reload`, a destination of the
   * same name opens right after: work that can resume there (e.g. uploads) need not be waited for.
   */
  close(options?: { reason: 'shutdown' | 'reload' }): Promise<void>
  /** A snapshot for /stats and /metrics; see DestinationStats for the fields the server reads. */
  stats?(): DestinationStats
  /** Whether the destination can take events now, for /ready; cheap (no I/O). */
  ready?(): { ready: true } | { ready: false, reason: string }
}

/** Fields of `stats()` the server exposes as metrics; a destination may add its own. */
export interface DestinationStats {
  openFiles?: number
  /** Bytes accepted but not yet at their final place (an object store's spool). */
  pendingBytes?: number
  /** Reception time (ms) of the oldest event not yet at its final place. */
  oldestPendingAt?: number | null
  uploadRetries?: number
  quarantined?: number
  [key: string]: unknown
}

/** What a destination reports as it works; the server turns it into metrics. */
export interface DestinationMetrics {
  /** One group commit (write and sync) took this long. */
  synced(seconds: number): void
  /** A file (or object) is complete at its final place. */
  completed(): void
  uploaded(seconds: number, outcome: 'ok' | 'failed' | 'quarantined'): void
  error(err: unknown): void
}

export interface DestinationContext {
  readonly name: string
  readonly baseDir: string
  /** A folder of this destination's own for state that must survive restarts. */
  readonly stateDir: string
  readonly instanceId: string
  readonly timeZone: string
  readonly logger: FastifyBaseLogger
  /** Milliseconds since the epoch; injectable for tests. */
  now(): number
  /** The named connection, or undefined when settings do not define it. */
  connection(name: string): Connection | undefined
  readonly metrics: DestinationMetrics
}

export interface DestinationCheckContext {
  readonly name: string
  /** Connection names defined in settings, with their types. */
  readonly connections: ReadonlyMap<string, string>
}

/** A stored line as it was written: `{"clientEvent":…,"origAddress":…,"serverTimestamp":…}`. */
export interface StoredRecord {
  clientEvent: Record<string, unknown>
  origAddress?: string
  serverTimestamp: string
  [field: string]: unknown
}

/** One event read back from what a destination stored. */
export interface StoredEvent {
  /** The stored line, without its line break. */
  readonly line: string
  /** The line, parsed (on first access). */
  readonly record: StoredRecord
  /** `serverTimestamp`, in milliseconds since the epoch. */
  readonly time: number
  /** Topic and routing key as routed: from the event's folder when the layout has one, else the event's own fields. */
  readonly topic: string
  readonly routingKey: string
  /** Key, in its connection, of the file the event was read from. */
  readonly source: string
}

/** What a read has done so far; the reader adds to the counters as it goes, the caller may read them any time. */
export interface QueryStats {
  /** Calls that list a folder (`list` or `listFolders`). */
  listCalls: number
  /** Objects the listings returned that could hold matching events. */
  filesListed: number
  filesOpened: number
  /** Bytes read from the store (as stored: compressed for `.gz`). */
  bytesRead: number
  /** Bytes of lines scanned (after decompression). */
  bytesScanned: number
  /** Lines parsed as JSON: those whose bytes could match. */
  linesParsed: number
  eventsMatched: number
  /** Files that could not be read, or not to the end (corrupt compressed data, read errors). */
  filesUnreadable: number
  /** Lines that are not a stored event (not JSON, no `serverTimestamp`). */
  linesCorrupt: number
  /** Files that end with an incomplete line or gzip member (still being written): read up to their last complete line. */
  filesPartial: number
}

export function newQueryStats (): QueryStats {
  return { listCalls: 0, filesListed: 0, filesOpened: 0, bytesRead: 0, bytesScanned: 0, linesParsed: 0, eventsMatched: 0, filesUnreadable: 0, linesCorrupt: 0, filesPartial: 0 }
}

/** A file or line that could not be read; the read goes on with the rest. */
export interface QueryProblem {
  /** Key of the file, in its connection. */
  readonly source: string
  readonly message: string
}

/**
 * Which stored events to read. Every filter is exact: time, topic and routing key also prune what
 * is listed and opened, as far as the destination's layout allows.
 */
export interface EventQuery {
  /** Lower bound on `serverTimestamp`, inclusive (ms since the epoch). */
  readonly from?: number
  /** Upper bound on `serverTimestamp`, exclusive. */
  readonly to?: number
  /** Topics to keep (any of them); all when absent. */
  readonly topics?: readonly string[]
  readonly routingKeys?: readonly string[]
  /** The exact test every returned event passes, after time, topic and routing key. */
  readonly where?: (event: StoredEvent) => boolean
  /**
   * A necessary condition for `where`, on a line's bytes, so that lines that cannot match are not
   * parsed: for each inner list, the line contains one of its byte strings. A line holding a
   * backslash may spell any string with escapes, so it is always a candidate.
   */
  readonly lineMustContain?: ReadonlyArray<readonly Buffer[]>
  /** Stop after this many events. */
  readonly limit?: number
  /** `stored` (default): file by file, in key order. `time`: one stream sorted by `serverTimestamp`. */
  readonly order?: 'stored' | 'time'
  /** Keep reading as new events are written, until `signal` aborts; polls every `intervalMs` (the reader picks a default). */
  readonly follow?: { readonly intervalMs?: number }
  readonly signal?: AbortSignal
  /** Counters the reader adds to (see newQueryStats). */
  readonly stats?: QueryStats
  /** Called for each file or line that cannot be read; the read goes on. */
  onProblem?(problem: QueryProblem): void
}

/** What a destination type's `read` gets: no server runs, only connections exist. */
export interface DestinationReadContext {
  readonly name: string
  readonly baseDir: string
  readonly timeZone: string
  readonly logger: FastifyBaseLogger
  now(): number
  connection(name: string): Connection | undefined
}

export interface DestinationType<S extends TSchema = TSchema> {
  readonly type: string
  /** Options of this type: everything in the destination block but the common fields (name, type, filters). */
  readonly schema: S
  check?(options: Static<S>, context: DestinationCheckContext): SettingsProblem[]
  create(options: Static<S>, context: DestinationContext): Destination
  /**
   * Reads back what destinations of this type stored, with no server running. Optional: a type
   * without it cannot be queried. Rejects (on the first `next()`) when the store cannot be listed;
   * files it cannot read are reported through `query.onProblem` and counted, and the rest is read.
   */
  read?(options: Static<S>, context: DestinationReadContext, query: EventQuery): AsyncIterable<StoredEvent>
}
