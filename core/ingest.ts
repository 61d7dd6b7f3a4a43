import type { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { compile as compileTrust } from '@fastify/proxy-addr'
import { presentedKey, KeyRing } from './auth.js'
import { bodyKind, decodeBody, parseEvents, readBody } from './body.js'
import type { Destination } from './destination.js'
import { EVS_ERR_AUTH_INVALID, EVS_ERR_AUTH_REQUIRED, EVS_ERR_DESTINATION_UNAVAILABLE } from './errors.js'
import { Dispatch, Router, UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from './router.js'
import type { Settings } from './schemas/settings.js'
import type { ZonedTime } from './time.js'

export interface IngestOptions {
  settings: Settings
  router: Router
  keys: KeyRing
  time: ZonedTime
  now: () => number
}

const kKeyIndex = Symbol('dss-event-server.keyIndex')

declare module 'fastify' {
  interface FastifyRequest {
    [kKeyIndex]: number
  }
}

const TOPIC_FIELDS = ['topic', 'auditTopic'] as const
const ROUTING_KEY_FIELDS = ['routingKey', 'auditRoutingKey'] as const

function scalar (value: unknown): string | undefined {
  if (typeof value === 'string') return value === '' ? undefined : value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (Array.isArray(value)) return scalar(value[0])
  return undefined
}

function firstField (source: Record<string, unknown>, fields: readonly string[]): string | undefined {
  for (const field of fields) {
    const value = scalar(source[field])
    if (value !== undefined) return value
  }
  return undefined
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
  const url = request.raw.url ?? ''
  const end = url.indexOf('?')
  const path = end === -1 ? url : url.slice(0, end)
  const segments = path.split('/')
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
export async function ingestRoutes (fastify: FastifyInstance, options: IngestOptions): Promise<void> {
  const { settings, router, keys, time, now } = options
  const { security, server } = settings
  const keyHeader = security.authKeyHeader.toLowerCase()
  const bodyLimit = server.bodyLimit
  const trusted = server.trustedProxies.length > 0 ? compileTrust(server.trustedProxies) : undefined

  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('*', async (request: FastifyRequest, payload: Readable) => {
    const kind = bodyKind(request.headers['content-type'])
    const length = request.headers['content-length']
    const raw = await readBody(payload, bodyLimit, length === undefined ? undefined : Number(length))
    return { kind, body: await decodeBody(raw, request.headers['content-encoding'], bodyLimit) }
  })

  fastify.decorateRequest(kKeyIndex, -1)
  fastify.addHook('onRequest', async (request) => {
    const key = presentedKey(request.headers, keyHeader)
    if (key === undefined) {
      if (security.requireAuthenticationForEvents) throw new EVS_ERR_AUTH_REQUIRED()
      return
    }
    const index = keys.match(key)
    // A wrong key is refused even when authentication is optional: silently ignoring it would drop
    // the events that a destination requiring that key expects.
    if (index === -1) throw new EVS_ERR_AUTH_INVALID()
    request[kKeyIndex] = index
  })

  function senderAddress (request: FastifyRequest): string {
    const nginxClient = request.headers['x-dss-nginx-client-ip']
    if (trusted !== undefined && typeof nginxClient === 'string' && nginxClient !== '' &&
        trusted(request.socket.remoteAddress ?? '', 0)) {
      return normaliseAddress(nginxClient.trim())
    }
    return normaliseAddress(request.ip)
  }

  async function ingest (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const parsed = request.body as { kind: 'auto' | 'ndjson', body: Buffer } | undefined
    const events = parseEvents(parsed?.body ?? Buffer.alloc(0), parsed?.kind ?? 'auto')
    const receivedAt = now()
    const tail = `,"origAddress":${JSON.stringify(senderAddress(request))},"serverTimestamp":"${time.timestamp(receivedAt)}"}\n`
    const defaults = requestDefaults(request)
    const keyIndex = request[kKeyIndex]
    const dispatch = new Dispatch()
    for (const event of events) {
      const topic = firstField(event.value, TOPIC_FIELDS) ?? defaults.topic ?? UNKNOWN_TOPIC
      const routingKey = firstField(event.value, ROUTING_KEY_FIELDS) ?? defaults.routingKey ?? UNKNOWN_ROUTING_KEY
      const targets = router.matches(topic, routingKey, keyIndex)
      if (targets.length === 0) continue
      dispatch.add(targets, { topic, routingKey, receivedAt, line: Buffer.from(`{"clientEvent":${event.raw}${tail}`) })
    }
    await Promise.all([...dispatch.batches].map(async ([destination, batch]) => await accept(destination, batch)))
    await reply.code(200).send({ status: 'ok', received: events.length, routed: dispatch.count })
  }

  async function accept (destination: Destination, batch: Parameters<Destination['accept']>[0]): Promise<void> {
    try {
      await destination.accept(batch)
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { statusCode?: number }
      // A destination's own answer (e.g. its spool is full) says more than a generic one.
      if (e.code?.startsWith('EVS_ERR_') === true && e.statusCode !== undefined) throw e
      fastify.log.error({ destination: destination.name, err: e }, 'destination could not store events')
      throw new EVS_ERR_DESTINATION_UNAVAILABLE(destination.name, e.code ?? e.message)
    }
  }

  fastify.post('/events', ingest)
  fastify.post('/events/*', ingest)
}
