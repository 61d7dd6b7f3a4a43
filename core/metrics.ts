import { Counter, Gauge, Registry } from 'prom-client'
import type { Destination, DestinationCounter, DestinationHistogram, DestinationMetrics } from './destination.js'
import { EVS_ERR_METRIC_CONFLICT } from './errors.js'

/** Topics that DSS sends; others are labelled too, up to a bound, then counted as "other". */
const KNOWN_TOPICS = ['generic', 'generic-failure', 'authfail', 'apinode-query', 'compute-resource-usage', 'apicalls']
const MAX_TOPIC_LABELS = 50
export const OTHER_TOPIC = 'other'

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

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
 * A histogram kept as bucket counts per label values, for the same reason as Tally: prom-client's
 * observe() costs more than a small request. It exposes the Prometheus histogram series itself.
 */
export class TallyHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #labels: readonly string[]
  readonly #bounds: readonly number[]
  readonly #series = new Map<string, { counts: Float64Array, sum: number }>()

  /** With several labels, `observe` takes their values joined by TallyHistogram.SEPARATOR. */
  constructor (name: string, help: string, labels: string | readonly string[], bounds: readonly number[], registry: Registry) {
    this.name = name
    this.help = help
    this.#labels = typeof labels === 'string' ? [labels] : labels
    this.#bounds = bounds
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  static readonly SEPARATOR = '\u0000'

  observe (labelValues: string, seconds: number): void {
    let series = this.#series.get(labelValues)
    if (series === undefined) this.#series.set(labelValues, series = { counts: new Float64Array(this.#bounds.length + 1), sum: 0 })
    let i = 0
    while (i < this.#bounds.length && seconds > (this.#bounds[i] as number)) i++
    series.counts[i] = (series.counts[i] as number) + 1
    series.sum += seconds
  }

  /** The series in prom-client's shape, as its Registry reads them for /metrics. */
  get (): { name: string, help: string, type: string, aggregator: string, values: Sample[] } {
    const values: Sample[] = []
    for (const [key, { counts, sum }] of this.#series) {
      const labels: Record<string, string> = {}
      const parts = this.#labels.length === 1 ? [key] : key.split(TallyHistogram.SEPARATOR)
      this.#labels.forEach((label, i) => { labels[label] = parts[i] ?? '' })
      let cumulative = 0
      this.#bounds.forEach((bound, i) => {
        cumulative += counts[i] as number
        values.push({ labels: { le: bound, ...labels }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      cumulative += counts[this.#bounds.length] as number
      values.push({ labels: { le: '+Inf', ...labels }, value: cumulative, metricName: `${this.name}_bucket` })
      values.push({ labels: { ...labels }, value: sum, metricName: `${this.name}_sum` })
      values.push({ labels: { ...labels }, value: cumulative, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

/** An instrument a destination type declared, shared by every destination using its name. */
type Declared =
  | { kind: 'counter', help: string, tally: Tally }
  | { kind: 'histogram', help: string, label: string | undefined, histogram: TallyHistogram }
  | { kind: 'gauge', help: string, reads: Map<string, () => number | undefined> }

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
  readonly requestDuration: TallyHistogram
  inFlightBytes = 0
  readonly #declared = new Map<string, Declared>()
  /** The destinations in force, for the gauges read from their stats. */
  destinations: () => Iterable<Destination> = () => []

  constructor (now: () => number, destinations?: () => Iterable<Destination>) {
    this.#now = now
    if (destinations !== undefined) this.destinations = destinations
    this.startedAt = now()
    const registers = [this.registry]
    const counter = this.#exposeTally.bind(this)
    counter('evs_events_received_total', 'Events parsed from requests, by topic (bounded)', this.eventsReceived, 'topic')
    counter('evs_events_accepted_total', 'Events acknowledged with a 2xx, by topic (bounded)', this.eventsAccepted, 'topic')
    counter('evs_events_rejected_total', 'Events parsed but not acknowledged, by reason', this.eventsRejected, 'reason')
    counter('evs_requests_accepted_total', 'Requests answered with a 2xx', this.requestsAccepted)
    counter('evs_requests_rejected_total', 'Requests refused, by error code', this.requestsRejected, 'reason')
    counter('evs_destination_events_total', 'Events a destination made durable', this.destinationEvents, 'destination')
    counter('evs_destination_bytes_total', 'Bytes of JSON lines a destination made durable (before compression)', this.destinationBytes, 'destination')
    this.requestDuration = new TallyHistogram('evs_request_duration_seconds', 'Time from request to answer on /events, by outcome', 'outcome', LATENCY_BUCKETS, this.registry)
    const metrics = this
    // eslint-disable-next-line no-new
    new Gauge({ name: 'evs_in_flight_bytes', help: 'Bytes of request bodies held in memory', registers, collect () { this.set(metrics.inFlightBytes) } })
    // What every destination may report (DestinationStats); a type declares its own through forDestination().
    const gauge = (name: string, help: string, read: (d: Destination) => number | undefined): void => {
      // eslint-disable-next-line no-new
      new Gauge({
        name,
        help,
        labelNames: ['destination'],
        registers,
        collect () {
          this.reset()
          for (const d of metrics.destinations()) {
            const value = read(d)
            if (value !== undefined) this.set({ destination: d.name }, value)
          }
        }
      })
    }
    gauge('evs_spool_bytes', 'Bytes acknowledged but not yet at their final place (object stores and Parquet: in the spool)', (d) => d.stats?.().pendingBytes)
    gauge('evs_oldest_pending_seconds', 'Age of the oldest event not yet at its final place (object stores: not yet uploaded)', (d) => {
      const since = d.stats?.().oldestPendingAt
      return since === undefined || since === null ? undefined : Math.max(0, (this.#now() - since) / 1000)
    })
  }

  /** Exposes a tally as a Prometheus counter, read when scraped. */
  #exposeTally (name: string, help: string, tally: Tally, label?: string): void {
    // eslint-disable-next-line no-new
    new Counter({
      name,
      help,
      labelNames: label === undefined ? [] : [label],
      registers: [this.registry],
      collect () {
        this.reset()
        for (const [value, n] of tally.values) {
          if (label === undefined) this.inc(n)
          else this.inc({ [label]: value }, n)
        }
      }
    })
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

  /** The same instrument for the same name, kind, help and label; a conflict is a plugin's bug. */
  #declare<K extends Declared['kind']> (name: string, kind: K, help: string, label: string | undefined, create: () => Extract<Declared, { kind: K }>): Extract<Declared, { kind: K }> {
    const found = this.#declared.get(name)
    if (found !== undefined) {
      if (found.kind !== kind || found.help !== help || (found.kind === 'histogram' && found.label !== label)) throw new EVS_ERR_METRIC_CONFLICT(name)
      return found as Extract<Declared, { kind: K }>
    }
    if (!/^evs_[a-z0-9_]+$/.test(name) || this.registry.getSingleMetric(name) !== undefined) throw new EVS_ERR_METRIC_CONFLICT(name)
    const declared = create()
    this.#declared.set(name, declared)
    return declared
  }

  /**
   * The instruments of the destination called `name`. A new destination of that name (a reload)
   * replaces the previous one's gauges; counters and histograms carry on.
   */
  forDestination (name: string): DestinationMetrics {
    for (const declared of this.#declared.values()) if (declared.kind === 'gauge') declared.reads.delete(name)
    const registers = [this.registry]
    const current = (): Set<string> => new Set([...this.destinations()].map((d) => d.name))
    return {
      counter: (metric, help): DestinationCounter => {
        const { tally } = this.#declare(metric, 'counter', help, undefined, () => {
          const tally = new Tally()
          this.#exposeTally(metric, help, tally, 'destination')
          return { kind: 'counter', help, tally }
        })
        return {
          add: (n = 1) => { tally.add(name, n) },
          get value () { return tally.values.get(name) ?? 0 }
        }
      },
      histogram: (metric, help, buckets, label): DestinationHistogram => {
        const { histogram } = this.#declare(metric, 'histogram', help, label, () => ({
          kind: 'histogram',
          help,
          label,
          histogram: new TallyHistogram(metric, help, label === undefined ? ['destination'] : ['destination', label], buckets, this.registry)
        }))
        const prefix = name + TallyHistogram.SEPARATOR
        return label === undefined
          ? { observe: (seconds) => { histogram.observe(name, seconds) } }
          : { observe: (seconds, labelValue = '') => { histogram.observe(prefix + labelValue, seconds) } }
      },
      gauge: (metric, help, read) => {
        const { reads } = this.#declare(metric, 'gauge', help, undefined, () => {
          const reads = new Map<string, () => number | undefined>()
          // eslint-disable-next-line no-new
          new Gauge({
            name: metric,
            help,
            labelNames: ['destination'],
            registers,
            collect () {
              this.reset()
              const names = current()
              for (const [destination, get] of reads) {
                const value = names.has(destination) ? get() : undefined
                if (value !== undefined) this.set({ destination }, value)
              }
            }
          })
          return { kind: 'gauge', help, reads }
        })
        reads.set(name, read)
      },
      error: (err) => { this.error(err, `destination ${name}`) }
    }
  }
}
