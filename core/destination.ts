import type { FastifyBaseLogger } from 'fastify'
import type { Static, TSchema } from 'typebox'
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
  /**
   * Takes the events of one request routed to this destination, in request order: possibly many,
   * spanning time periods (each carries its own `receivedAt`). Resolves once they are as durable as
   * the destination promises; the request is answered 2xx once every destination that took some of
   * its events resolved. Rejects when they cannot be stored: the request fails with 503 (with the
   * error itself when it carries an `EVS_ERR_*` code and a status, else
   * EVS_ERR_DESTINATION_UNAVAILABLE) and the client sends it again, so events of a rejected batch
   * that were stored anyway may come twice: duplicates, never loss. Calls overlap (one per request
   * in flight) and none comes once `close()` began. Events and their `line` are shared with the
   * other destinations: never modify them.
   */
  accept(events: readonly RoutedEvent[]): Promise<void>
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

/**
 * A snapshot for /stats (and the two gauges below). The server reads the fields named here, the
 * same for every destination; anything else is the destination's own, in its own words, and
 * /stats shows it under `details`.
 */
export interface DestinationStats {
  /** Bytes acknowledged but not yet at their final place (a spool, a send buffer): evs_spool_bytes. */
  pendingBytes?: number
  /** Reception time (ms) of the oldest event not yet at its final place: evs_oldest_pending_seconds. */
  oldestPendingAt?: number | null
  [key: string]: unknown
}

export interface DestinationCounter {
  add(n?: number): void
  /** What destinations of this name counted so far, across reloads: for `stats()`. */
  readonly value: number
}

export interface DestinationHistogram {
  /** `labelValue`: the value of the histogram's own label, when it was declared with one. */
  observe(seconds: number, labelValue?: string): void
}

/**
 * What a destination reports as it works, as Prometheus metrics labelled with its name. A type
 * declares the instruments it needs, by a name of its own (`evs_[a-z0-9_]+`): every destination
 * using a name shares the instrument, declared again with the same kind, help and label; counters
 * and histograms carry on across reloads, a gauge follows the destination of its name.
 */
export interface DestinationMetrics {
  /** A counter (its name ends in `_total`). */
  counter(name: string, help: string): DestinationCounter
  /** A histogram of durations in seconds; `label` names one more label of the type's choosing. */
  histogram(name: string, help: string, buckets: readonly number[], label?: string): DestinationHistogram
  /** A gauge, read when metrics are scraped. */
  gauge(name: string, help: string, read: () => number | undefined): void
  /** A failure worth showing as /stats `lastError`. */
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
  /** Folder that relative paths in settings resolve against (the settings file's folder). */
  readonly baseDir: string
  /**
   * `verify` checks settings to read what was written, not to write: secrets only the server
   * needs (a signing key) may then be absent.
   */
  readonly purpose: 'serve' | 'verify'
}

/** What `dss-event-server verify` asks of a destination type that can check its stored output. */
export interface VerifyRequest {
  /** Only what was recorded from / until these instants (milliseconds since the epoch). */
  readonly from?: number
  readonly to?: number
  /** PEM of the public keys a signature may be made with (several across a key rotation). */
  readonly publicKeys?: readonly string[]
  /** Heads known from elsewhere (the server's logs kept by a SIEM): each must be in the trail, unchanged. */
  readonly knownHeads?: ReadonlyArray<{ destination: string, instanceId: string, seq: number, hash: string }>
  /** Milliseconds since the epoch. */
  readonly now: number
  onProgress?(progress: VerifyProgress): void
}

export interface VerifyProgress {
  readonly phase: string
  readonly done: number
  readonly total: number
  readonly bytes: number
}

export type VerifyProblemKind =
  | 'altered' | 'missing' | 'unexpected' | 'chain-broken' | 'bad-signature' | 'missing-signature' | 'tail-cut' | 'unchecked'

export interface VerifyProblem {
  readonly kind: VerifyProblemKind
  /** Key (relative to the connection) of the object concerned. */
  readonly key: string
  readonly message: string
}

export interface VerifyReport {
  readonly destination: string
  /** Everything that does not check; the trail is vouched for only when this is empty. */
  readonly problems: VerifyProblem[]
  /** Files not complete yet (still being written or uploaded): not verified, not a failure. */
  readonly open: Array<{ key: string, message: string }>
  readonly summary: {
    instances: number
    records: number
    heads: number
    files: number
    bytes: number
    events: number
    /** Reception time of the first and last event of the files verified, ISO-8601. */
    from: string | null
    to: string | null
    signed: boolean
    notes: string[]
  }
}

export interface DestinationVerifyContext {
  readonly name: string
  readonly baseDir: string
  readonly logger: FastifyBaseLogger
  connection(name: string): Connection | undefined
  /** Names of every destination in the settings (several may share a folder). */
  readonly destinations: ReadonlySet<string>
}

/** DSS's own placeholders for a message without topic or routing key. */
export const UNKNOWN_TOPIC = '??UnknownTopic??'
export const UNKNOWN_ROUTING_KEY = '__Routed_Nowhere__'

/** Where an event names its topic and routing key, the first with a value winning. */
export const TOPIC_FIELDS = ['topic', 'auditTopic'] as const
export const ROUTING_KEY_FIELDS = ['routingKey', 'auditRoutingKey'] as const

/** A routing field's value as text: a non-empty string, a number or boolean, or an array's first such. */
export function scalar (value: unknown): string | undefined {
  // A loop, not recursion: the value is untrusted and may be nested arbitrarily deep.
  while (Array.isArray(value)) value = value[0]
  if (typeof value === 'string') return value === '' ? undefined : value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return undefined
}

/** The first of `fields` that `source` holds as a scalar (see `scalar`). */
export function firstField (source: Record<string, unknown>, fields: readonly string[]): string | undefined {
  for (const field of fields) {
    const value = scalar(source[field])
    if (value !== undefined) return value
  }
  return undefined
}

const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/

/**
 * What a line holding a field equal to `value` must contain. A number has several spellings
 * (`1000`, `1e3`), so a value that reads as one gives nothing; `true`, `false` and `null` have one.
 */
export function equalityNeedle (value: string): Buffer | undefined {
  if (NUMBER.test(value)) return undefined
  if (value === 'true' || value === 'false' || value === 'null') return Buffer.from(value)
  return Buffer.from(JSON.stringify(value))
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
   * Checks what a destination of this type stored, with no server running (`dss-event-server
   * verify`). Optional: types that keep no verifiable trail leave it out; `undefined` means this
   * destination keeps none (e.g. its integrity trail is off).
   */
  verify?(options: Static<S>, context: DestinationVerifyContext, request: VerifyRequest): Promise<VerifyReport | undefined>
  /**
   * Reads back what destinations of this type stored, with no server running. Optional: a type
   * without it cannot be queried. Rejects (on the first `next()`) when the store cannot be listed;
   * files it cannot read are reported through `query.onProblem` and counted, and the rest is read.
   */
  read?(options: Static<S>, context: DestinationReadContext, query: EventQuery): AsyncIterable<StoredEvent>
}
