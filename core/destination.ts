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
}
