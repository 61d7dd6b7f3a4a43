import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Destination, DestinationMetrics } from './destination.js'

/** Topics that DSS sends; others are labelled too, up to a bound, then counted as "other". */
const KNOWN_TOPICS = ['generic', 'generic-failure', 'authfail', 'apinode-query', 'compute-resource-usage', 'apicalls']
const MAX_TOPIC_LABELS = 50
export const OTHER_TOPIC = 'other'

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const UPLOAD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

/**
 * A counter kept as plain numbers on the request path and handed to Prometheus only when scraped:
 * prom-client hashes labels on every increment, which costs more than the rest of a small request.
 */
export class Tally {
  readonly values = new Map<string, number>()

  add (label: string, n = 1): void {
    this.values.set(label, (this.values.get(label) ?? 0) + n)
  }
}

/** One exposed sample, as prom-client's Registry reads it. */
interface Sample { labels: Record<string, string | number>, value: number, metricName: string }

/**
 * A histogram kept as bucket counts per label value, for the same reason as Tally: prom-client's
 * observe() costs more than a small request. It exposes the Prometheus histogram series itself.
 */
export class TallyHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #label: string
  readonly #bounds: readonly number[]
  readonly #series = new Map<string, { counts: Float64Array, sum: number }>()

  constructor (name: string, help: string, label: string, bounds: readonly number[], registry: Registry) {
    this.name = name
    this.help = help
    this.#label = label
    this.#bounds = bounds
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  observe (labelValue: string, seconds: number): void {
    let series = this.#series.get(labelValue)
    if (series === undefined) this.#series.set(labelValue, series = { counts: new Float64Array(this.#bounds.length + 1), sum: 0 })
    let i = 0
    while (i < this.#bounds.length && seconds > (this.#bounds[i] as number)) i++
    series.counts[i] = (series.counts[i] as number) + 1
    series.sum += seconds
  }

  /** The series in prom-client's shape, as its Registry reads them for /metrics. */
  get (): { name: string, help: string, type: string, aggregator: string, values: Sample[] } {
    const values: Sample[] = []
    for (const [labelValue, { counts, sum }] of this.#series) {
      let cumulative = 0
      this.#bounds.forEach((bound, i) => {
        cumulative += counts[i] as number
        values.push({ labels: { le: bound, [this.#label]: labelValue }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      cumulative += counts[this.#bounds.length] as number
      values.push({ labels: { le: '+Inf', [this.#label]: labelValue }, value: cumulative, metricName: `${this.name}_bucket` })
      values.push({ labels: { [this.#label]: labelValue }, value: sum, metricName: `${this.name}_sum` })
      values.push({ labels: { [this.#label]: labelValue }, value: cumulative, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

export interface LastError {
  message: string
  at: string
  where: string
}

/**
 * Every figure the server reports, in one Prometheus registry of its own (a process may run
 * several servers). `/metrics` exposes it as is; `/stats` reads it back as JSON. Labels are bounded:
 * destinations come from settings, topics are capped, routing keys are never labels.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly startedAt: number
  lastError: LastError | null = null
  readonly #topics = new Set(KNOWN_TOPICS)
  readonly #now: () => number

  readonly eventsReceived = new Tally()
  readonly eventsAccepted = new Tally()
  readonly eventsRejected = new Tally()
  readonly requestsAccepted = new Tally()
  readonly requestsRejected = new Tally()
  readonly destinationEvents = new Tally()
  readonly destinationBytes = new Tally()
  readonly filesCompleted = new Tally()
  readonly requestDuration: TallyHistogram
  readonly syncDuration: TallyHistogram
  readonly uploadDuration: Histogram<'destination' | 'outcome'>
  inFlightBytes = 0

  constructor (now: () => number, destinations: () => Iterable<Destination>) {
    this.#now = now
    this.startedAt = now()
    const registers = [this.registry]
    const counter = (name: string, help: string, tally: Tally, label?: string): void => {
      // eslint-disable-next-line no-new
      new Counter({
        name,
        help,
        labelNames: label === undefined ? [] : [label],
        registers,
        collect () {
          this.reset()
          for (const [value, n] of tally.values) {
            if (label === undefined) this.inc(n)
            else this.inc({ [label]: value }, n)
          }
        }
      })
    }
    counter('evs_events_received_total', 'Events parsed from requests, by topic (bounded)', this.eventsReceived, 'topic')
    counter('evs_events_accepted_total', 'Events acknowledged with a 2xx, by topic (bounded)', this.eventsAccepted, 'topic')
    counter('evs_events_rejected_total', 'Events parsed but not acknowledged, by reason', this.eventsRejected, 'reason')
    counter('evs_requests_accepted_total', 'Requests answered with a 2xx', this.requestsAccepted)
    counter('evs_requests_rejected_total', 'Requests refused, by error code', this.requestsRejected, 'reason')
    counter('evs_destination_events_total', 'Events a destination made durable', this.destinationEvents, 'destination')
    counter('evs_destination_bytes_total', 'Bytes of JSON lines a destination made durable (before compression)', this.destinationBytes, 'destination')
    counter('evs_files_completed_total', 'Files completed (filesystem) or objects uploaded (object stores)', this.filesCompleted, 'destination')
    this.requestDuration = new TallyHistogram('evs_request_duration_seconds', 'Time from request to answer on /events, by outcome', 'outcome', LATENCY_BUCKETS, this.registry)
    this.syncDuration = new TallyHistogram('evs_fsync_duration_seconds', 'Duration of one group commit (write and fdatasync)', 'destination', LATENCY_BUCKETS, this.registry)
    this.uploadDuration = new Histogram({ name: 'evs_upload_duration_seconds', help: 'Duration of one upload attempt, by outcome (ok, failed, quarantined)', labelNames: ['destination', 'outcome'], buckets: UPLOAD_BUCKETS, registers })
    const metrics = this
    // eslint-disable-next-line no-new
    new Gauge({ name: 'evs_in_flight_bytes', help: 'Bytes of request bodies held in memory', registers, collect () { this.set(metrics.inFlightBytes) } })
    const stat = (d: Destination, key: string): number | undefined => {
      const value = d.stats?.()[key]
      return typeof value === 'number' ? value : undefined
    }
    const gauge = (name: string, help: string, read: (d: Destination) => number | undefined): void => {
      // eslint-disable-next-line no-new
      new Gauge({
        name,
        help,
        labelNames: ['destination'],
        registers,
        collect () {
          this.reset()
          for (const d of destinations()) {
            const value = read(d)
            if (value !== undefined) this.set({ destination: d.name }, value)
          }
        }
      })
    }
    gauge('evs_open_files', 'Files open for writing', (d) => stat(d, 'openFiles'))
    gauge('evs_spool_bytes', 'Bytes waiting in the spool for upload (object stores) or conversion (Parquet)', (d) => stat(d, 'pendingBytes'))
    gauge('evs_oldest_pending_seconds', 'Age of the oldest event waiting for upload (object stores)', (d) => {
      const since = stat(d, 'oldestPendingAt')
      return since === undefined ? undefined : Math.max(0, (this.#now() - since) / 1000)
    })
    gauge('evs_upload_retries', 'Failed upload attempts so far, each followed by a retry', (d) => stat(d, 'uploadRetries'))
    gauge('evs_quarantined_files', 'Files the store refused for good, kept in quarantine', (d) => stat(d, 'quarantined'))
  }

  /** A bounded topic label: DSS's topics and the first others seen, then "other". */
  topic (topic: string): string {
    if (this.#topics.has(topic)) return topic
    if (this.#topics.size < MAX_TOPIC_LABELS + KNOWN_TOPICS.length) {
      this.#topics.add(topic)
      return topic
    }
    return OTHER_TOPIC
  }

  error (err: unknown, where: string): void {
    this.lastError = { message: err instanceof Error ? err.message : String(err), at: new Date(this.#now()).toISOString(), where }
  }

  forDestination (name: string): DestinationMetrics {
    return {
      synced: (seconds) => { this.syncDuration.observe(name, seconds) },
      completed: () => { this.filesCompleted.add(name) },
      uploaded: (seconds, outcome) => { this.uploadDuration.observe({ destination: name, outcome }, seconds) },
      error: (err) => { this.error(err, `destination ${name}`) }
    }
  }
}
