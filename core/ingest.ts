import type { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { compile as compileTrust } from '@fastify/proxy-addr'
import { presentedKey } from './auth.js'
import { pathOf } from './request-target.js'
import { parseEvents } from './parse-events.js'
import { AUTO_TYPES, bodyKind, decodeBody, NDJSON_TYPES, readBody, type BodyInterrupts } from './request-body.js'
import { firstField, ROUTING_KEY_FIELDS, TOPIC_FIELDS, type BodyKind, type EventSpan } from './json-scan.js'
import type { Destination, RoutedEvent } from './destination.js'
import { EVS_ERR_AUTH_INVALID, EVS_ERR_AUTH_REQUIRED, EVS_ERR_BODY_ABORTED, EVS_ERR_DESTINATION_UNAVAILABLE } from './errors.js'
import type { MemoryBudget } from './memory-budget.js'
import type { Metrics } from './metrics.js'
import type { Pipeline } from './pipeline.js'
import type { PipelineSwitch } from './pipeline-switch.js'
import { Dispatch, UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from './router.js'

const LINE_HEAD = Buffer.from('{"clientEvent":')

/** What the /events routes need from the server around them. */
export interface IngestRuntime {
  readonly metrics: Metrics
  /** Bytes of requests in memory, against server.maxInFlightBytes. */
  readonly budget: MemoryBudget
  now(): number
  /** The pipeline in force; requests count themselves in and out of it. */
  readonly pipelines: Pick<PipelineSwitch, 'tryAcquire' | 'acquire' | 'leave'>
  /** Bodies being read or decoded: a reload or shutdown interrupts them. */
  readonly bodies: BodyInterrupts
}

const kPipeline = Symbol('dss-event-server.pipeline')
const kKeyIndex = Symbol('dss-event-server.keyIndex')
const kBytes = Symbol('dss-event-server.bytes')
const kHandling = Symbol('dss-event-server.handling')
const kClosed = Symbol('dss-event-server.closed')

declare module 'fastify' {
  interface FastifyRequest {
    /** The pipeline this request counts itself in on; undefined once released. */
    [kPipeline]: Pipeline | undefined
    [kKeyIndex]: number
    /** Bytes this request holds of the memory budget. */
    [kBytes]: number
    /** The handler runs: it releases the request itself when it ends. */
    [kHandling]: boolean
    /** The connection closed (answered or not). */
    [kClosed]: boolean
  }
}

function decodePathSegment (segment: string | undefined): string | undefined {
  if (segment === undefined || segment === '') return undefined
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

/** Topic and routing key given for the whole request: query parameters, then `/events/<topic>/<routing-key>`. */
function requestDefaults (request: FastifyRequest): { topic: string | undefined, routingKey: string | undefined } {
  const query = (request.query ?? {}) as Record<string, unknown>
  const segments = pathOf(request.raw.url ?? '').split('/')
  // segments: ['', 'events', topic, routingKey, ...]
  return {
    topic: firstField(query, TOPIC_FIELDS) ?? decodePathSegment(segments[2]),
    routingKey: firstField(query, ROUTING_KEY_FIELDS) ?? decodePathSegment(segments[3])
  }
}

function normaliseAddress (address: string | undefined): string {
  if (address === undefined) return 'unknown'
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

/** The `/events` routes: authenticate, read, decode, parse, route, and answer once durable. */
export async function ingestRoutes (fastify: FastifyInstance, { runtime }: { runtime: IngestRuntime }): Promise<void> {
  const { metrics, budget } = runtime
  // Trusted proxies change only with a restart (Fastify's trustProxy is fixed at creation).
  const trustCache = new WeakMap<Pipeline, ((addr: string, i: number) => boolean) | undefined>()
  const trustOf = (pipeline: Pipeline): ((addr: string, i: number) => boolean) | undefined => {
    if (!trustCache.has(pipeline)) {
      const proxies = pipeline.settings.server.trustedProxies
      trustCache.set(pipeline, proxies.length > 0 ? compileTrust(proxies) : undefined)
    }
    return trustCache.get(pipeline)
  }

  // DSS nodes post to the same few URLs: their topic and routing key are worked out once.
  let defaultsCache = new Map<string, { topic: string | undefined, routingKey: string | undefined }>()
  const defaultsOf = (request: FastifyRequest): { topic: string | undefined, routingKey: string | undefined } => {
    const url = request.raw.url ?? ''
    let found = defaultsCache.get(url)
    if (found === undefined) {
      found = requestDefaults(request)
      if (defaultsCache.size >= 1000) defaultsCache = new Map()
      defaultsCache.set(url, found)
    }
    return found
  }

  /**
   * Takes `bytes` more of the memory budget for this request; throws EVS_ERR_OVERLOADED past it,
   * and EVS_ERR_BODY_ABORTED once the request was released (its client went away).
   */
  const hold = (request: FastifyRequest, bytes: number): void => {
    const pipeline = request[kPipeline]
    if (pipeline === undefined) throw new EVS_ERR_BODY_ABORTED()
    budget.take(bytes, pipeline.settings.server.maxInFlightBytes)
    request[kBytes] += bytes
  }

  /** Makes the request hold exactly `bytes` (memory already allocated: never refused). */
  const holdExactly = (request: FastifyRequest, bytes: number): void => {
    budget.force(bytes - request[kBytes])
    request[kBytes] = bytes
  }

  /**
   * Gives back the request's bytes and its pipeline reference. Idempotent; runs when the handler
   * ends, or when the connection closes while no handler runs (a client that hangs up, resets, or
   * stalls until a timeout), whichever comes first.
   */
  const release = (request: FastifyRequest): void => {
    if (request[kBytes] !== 0) {
      budget.give(request[kBytes])
      request[kBytes] = 0
    }
    const pipeline = request[kPipeline]
    if (pipeline !== undefined) {
      request[kPipeline] = undefined
      runtime.pipelines.leave(pipeline)
    }
  }

  fastify.removeAllContentTypeParsers()
  const parseBody = (request: FastifyRequest, payload: Readable, done: (err: Error | null, body?: unknown) => void): void => {
    let kind: BodyKind
    try {
      kind = bodyKind(request.headers['content-type'])
    } catch (err) {
      done(err as Error)
      return
    }
    const pipeline = request[kPipeline]
    if (pipeline === undefined) {
      done(new EVS_ERR_BODY_ABORTED())
      return
    }
    const { bodyLimit: limit, bodyIdleTimeoutS } = pipeline.settings.server
    const length = request.headers['content-length']
    const encoding = request.headers['content-encoding']
    let counted = 0
    readBody(payload, {
      limit,
      declaredLength: length === undefined ? undefined : Number(length),
      idleMs: bodyIdleTimeoutS * 1000,
      // Counted as the bytes arrive, declared or chunked: a slow sender holds only what it sent.
      onProgress: (total) => {
        hold(request, total - counted)
        counted = total
      },
      interrupts: runtime.bodies
    }).then(async (raw) => {
      if (encoding === undefined || encoding === 'identity') {
        done(null, { kind, body: raw })
        return
      }
      const body = await decodeBody(raw, encoding, { limit, onChunk: (bytes) => { hold(request, bytes) }, interrupts: runtime.bodies })
      // The compressed bytes are garbage from here on.
      holdExactly(request, body.length)
      done(null, { kind, body })
    }).catch((err: Error) => done(err))
  }
  // Fastify caches its parser look-up for named media types only: '*' alone would parse every
  // Content-Type header anew.
  for (const type of [...AUTO_TYPES, ...NDJSON_TYPES]) fastify.addContentTypeParser(type, parseBody)
  fastify.addContentTypeParser('*', parseBody)

  fastify.decorateRequest(kPipeline, undefined)
  fastify.decorateRequest(kKeyIndex, -1)
  fastify.decorateRequest(kBytes, 0)
  fastify.decorateRequest(kHandling, false)
  fastify.decorateRequest(kClosed, false)
  // Callback-style hooks: these run on every request, and a promise each would cost more than they do.
  fastify.addHook('onResponse', (request, reply, done) => {
    release(request)
    const status = reply.statusCode
    metrics.requestDuration.observe(status < 300 ? 'accepted' : status < 500 ? 'rejected' : 'failed', reply.elapsedTime / 1000)
    done()
  })

  const admit = (request: FastifyRequest, pipeline: Pipeline): void => {
    request[kPipeline] = pipeline
    // The client left while the request waited for a reload: nothing to do for it.
    if (request[kClosed]) {
      release(request)
      throw new EVS_ERR_BODY_ABORTED()
    }
    const key = presentedKey(request.headers, pipeline.keyHeader)
    if (key === undefined) {
      if (pipeline.settings.security.requireAuthenticationForEvents) throw new EVS_ERR_AUTH_REQUIRED()
    } else {
      const index = pipeline.eventKeys.match(key)
      // A wrong key is refused even when authentication is optional: silently ignoring it would drop
      // the events that a destination requiring that key expects.
      if (index === -1) throw new EVS_ERR_AUTH_INVALID()
      request[kKeyIndex] = index
    }
    // Refuse at once a body that could not fit in memory now; its bytes are counted as they arrive.
    const length = Number(request.headers['content-length'] ?? 0)
    const { maxInFlightBytes } = pipeline.settings.server
    if (length > 0) budget.refuseUnlessFits(length, maxInFlightBytes)
  }
  fastify.addHook('onRequest', (request, reply, done) => {
    // 'close' comes on every path: after the answer, or when the client hangs up, resets or is cut
    // off by a timeout. Fastify's onResponse and onRequestAbort miss the last ones.
    reply.raw.once('close', () => {
      request[kClosed] = true
      if (!request[kHandling]) release(request)
    })
    const pipeline = runtime.pipelines.tryAcquire()
    if (pipeline === undefined) {
      runtime.pipelines.acquire().then((p) => { admit(request, p); done() }).catch(done)
      return
    }
    try {
      admit(request, pipeline)
      done()
    } catch (err) {
      done(err as Error)
    }
  })

  function senderAddress (request: FastifyRequest, pipeline: Pipeline): string {
    const nginxClient = request.headers['x-dss-nginx-client-ip']
    const trusted = trustOf(pipeline)
    if (trusted !== undefined && typeof nginxClient === 'string' && nginxClient !== '' &&
        trusted(request.socket.remoteAddress ?? '', 0)) {
      return normaliseAddress(nginxClient.trim())
    }
    return normaliseAddress(request.ip)
  }

  async function accept (destination: Destination, batch: RoutedEvent[]): Promise<void> {
    try {
      await destination.accept(batch)
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { statusCode?: number }
      metrics.error(e, `destination ${destination.name}`)
      // A destination's own answer (e.g. its spool is full) says more than a generic one.
      if (e.code?.startsWith('EVS_ERR_') === true && e.statusCode !== undefined) throw e
      fastify.log.error({ destination: destination.name, err: e }, 'destination could not store events')
      throw new EVS_ERR_DESTINATION_UNAVAILABLE(destination.name, e.code ?? e.message)
    }
    let bytes = 0
    for (const event of batch) bytes += event.line.length
    metrics.destinationEvents.add(destination.name, batch.length)
    metrics.destinationBytes.add(destination.name, bytes)
  }

  // The end of every line: the same for all requests from one address within a millisecond.
  let lastTail = { pipeline: undefined as Pipeline | undefined, address: '', at: Number.NaN, bytes: Buffer.alloc(0) }
  function tailOf (pipeline: Pipeline, address: string, at: number): Buffer {
    if (lastTail.at !== at || lastTail.address !== address || lastTail.pipeline !== pipeline) {
      const text = `,"origAddress":${JSON.stringify(address)},"serverTimestamp":"${pipeline.time.timestamp(at)}"}\n`
      lastTail = { pipeline, address, at, bytes: Buffer.from(text) }
    }
    return lastTail.bytes
  }

  interface Routed {
    dispatch: Dispatch
    received: number
    perTopic: Map<string, number>
  }

  /**
   * Parses and routes a request's events into lines. Synchronous, so the body is garbage before
   * the request waits for the disk: only the lines stay in memory.
   */
  function route (request: FastifyRequest, pipeline: Pipeline): Routed {
    const parsed = request.body as { kind: BodyKind, body: Buffer | undefined } | undefined
    const { source, events } = parseEvents(parsed?.body ?? Buffer.alloc(0), parsed?.kind ?? 'auto')
    if (parsed !== undefined) parsed.body = undefined
    const receivedAt = runtime.now()
    const tail = tailOf(pipeline, senderAddress(request, pipeline), receivedAt)
    const defaults = defaultsOf(request)
    const keyIndex = request[kKeyIndex]
    const perTopic = new Map<string, number>()
    // Events of a batch mostly share topic and routing key: route each pair once.
    let lastTopic: string | undefined
    let lastRoutingKey: string | undefined
    let targets: Destination[] = []
    const routes: Array<{ event: EventSpan, topic: string, routingKey: string, targets: Destination[] }> = []
    let total = 0
    for (const event of events) {
      const topic = event.topic ?? defaults.topic ?? UNKNOWN_TOPIC
      const routingKey = event.routingKey ?? defaults.routingKey ?? UNKNOWN_ROUTING_KEY
      const label = metrics.topic(topic)
      perTopic.set(label, (perTopic.get(label) ?? 0) + 1)
      if (topic !== lastTopic || routingKey !== lastRoutingKey) {
        targets = pipeline.router.matches(topic, routingKey, keyIndex)
        lastTopic = topic
        lastRoutingKey = routingKey
      }
      if (targets.length === 0) continue
      routes.push({ event, topic, routingKey, targets })
      total += LINE_HEAD.length + event.end - event.start + tail.length
    }
    // One buffer for the whole request, copied from the body's bytes; each line is a view into it.
    // The request now holds the lines instead of its body, which is garbage from here on.
    const lines = Buffer.allocUnsafe(total)
    holdExactly(request, total)
    const dispatch = new Dispatch()
    let offset = 0
    for (const { event, topic, routingKey, targets } of routes) {
      const start = offset
      offset += LINE_HEAD.copy(lines, offset)
      const textStart = offset
      offset += source.copy(lines, offset, event.start, event.end)
      if (event.lineBreaks) {
        for (let j = textStart; j < offset; j++) if (lines[j] === 10 || lines[j] === 13) lines[j] = 32
      }
      offset += tail.copy(lines, offset)
      dispatch.add(targets, { topic, routingKey, receivedAt, line: lines.subarray(start, offset) })
    }
    return { dispatch, received: events.length, perTopic }
  }

  async function ingest (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const pipeline = request[kPipeline]
    // The client hung up before its body was handled: it gets no answer, so nothing is written.
    if (pipeline === undefined || request[kClosed]) {
      release(request)
      throw new EVS_ERR_BODY_ABORTED()
    }
    request[kHandling] = true
    try {
      await handle(request, reply, pipeline)
    } finally {
      request[kHandling] = false
      release(request)
    }
  }

  async function handle (request: FastifyRequest, reply: FastifyReply, pipeline: Pipeline): Promise<void> {
    const { dispatch, received, perTopic } = route(request, pipeline)
    for (const [topic, count] of perTopic) metrics.eventsReceived.add(topic, count)
    try {
      if (dispatch.batches.size === 1) {
        const [destination, batch] = dispatch.batches.entries().next().value as [Destination, RoutedEvent[]]
        await accept(destination, batch)
      } else {
        await Promise.all([...dispatch.batches].map(async ([destination, batch]) => await accept(destination, batch)))
      }
    } catch (err) {
      metrics.eventsRejected.add((err as { code?: string }).code ?? 'EVS_ERR_INTERNAL', received)
      throw err
    }
    for (const [topic, count] of perTopic) metrics.eventsAccepted.add(topic, count)
    metrics.requestsAccepted.add('')
    await reply.code(200).header('content-type', 'application/json; charset=utf-8')
      .send(`{"status":"ok","received":${received},"routed":${dispatch.count}}`)
  }

  fastify.post('/events', ingest)
  fastify.post('/events/*', ingest)
}
