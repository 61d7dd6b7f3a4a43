import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { KeyRing, presentedKey } from './auth.js'
import { EVS_ERR_ADMIN_AUTH, EVS_ERR_ADMIN_DISABLED, EVS_ERR_STATS_AUTH } from './errors.js'
import type { MemoryBudget } from './memory-budget.js'
import type { Destination } from './destination.js'
import type { Metrics, Tally } from './metrics.js'
import { HealthSchema, ReadySchema, ReloadSchema, StatsSchema, type StatsAnswer } from './schemas/ops.js'
import type { SecuritySettings, Settings } from './schemas/settings.js'

/** What the ops routes need from the server around them. */
export interface OpsRuntime {
  readonly instanceId: string
  readonly metrics: Metrics
  /** Bytes of requests in memory, against server.maxInFlightBytes. */
  readonly budget: MemoryBudget
  /** The settings and destinations in force (they change on reload). */
  readonly settings: Settings
  readonly destinations: ReadonlyMap<string, Destination>
  readonly closing: boolean
  now(): number
  reload(): Promise<{ warnings: string[] }>
}

function sum (tally: Tally): number {
  let total = 0
  for (const n of tally.values.values()) total += n
  return total
}

function byLabel (tally: Tally): Record<string, number> {
  return Object.fromEntries(tally.values)
}

/** `/health`, `/ready`, `/stats`, `/metrics` and `/admin/reload`. */
export const opsRoutes: FastifyPluginAsyncTypebox<{ runtime: OpsRuntime }> = async function opsRoutes (fastify, { runtime: server }) {
  const { metrics, budget, now } = server
  // Key rings per settings version: built once, not per request.
  const rings = new WeakMap<SecuritySettings, { stats: KeyRing, admin: KeyRing }>()
  const ringsOf = (security: SecuritySettings): { stats: KeyRing, admin: KeyRing } => {
    let found = rings.get(security)
    if (found === undefined) {
      found = {
        stats: new KeyRing(security.statsAuthenticationKeys.map((k) => k.key)),
        admin: new KeyRing(security.adminAuthenticationKeys.map((k) => k.key))
      }
      rings.set(security, found)
    }
    return found
  }

  const statsAuth = async (request: FastifyRequest): Promise<void> => {
    const { security } = server.settings
    if (!security.requireAuthenticationForStats) return
    const key = presentedKey(request.headers, security.authKeyHeader.toLowerCase())
    if (key === undefined || ringsOf(security).stats.match(key) === -1) throw new EVS_ERR_STATS_AUTH()
  }

  fastify.get('/health', { schema: { response: { 200: HealthSchema } } }, async () => ({ status: 'ok' as const }))

  fastify.get('/ready', { schema: { response: { 200: ReadySchema, 503: ReadySchema } } }, async (_request, reply) => {
    const reasons: string[] = []
    if (server.closing) reasons.push('shutting down')
    const memory = budget.pressure(server.settings.server.maxInFlightBytes)
    if (memory !== undefined) reasons.push(memory)
    const destinations: Record<string, string> = {}
    for (const [name, destination] of server.destinations) {
      const state = destination.ready?.() ?? { ready: true }
      destinations[name] = state.ready ? 'ready' : state.reason
      if (!state.ready) reasons.push(`destination ${name}: ${state.reason}`)
    }
    if (reasons.length > 0) void reply.code(503).header('retry-after', '5')
    return { ready: reasons.length === 0, reasons, destinations }
  })

  fastify.get('/metrics', { onRequest: statsAuth }, async (_request, reply) => {
    void reply.header('content-type', metrics.registry.contentType)
    return await metrics.registry.metrics()
  })

  fastify.get('/stats', { onRequest: statsAuth, schema: { response: { 200: StatsSchema } } }, async () => {
    const receivedByTopic = byLabel(metrics.eventsReceived)
    const acceptedByTopic = byLabel(metrics.eventsAccepted)
    const byTopic: Record<string, { received: number, accepted: number }> = {}
    for (const topic of new Set([...Object.keys(receivedByTopic), ...Object.keys(acceptedByTopic)])) {
      byTopic[topic] = { received: receivedByTopic[topic] ?? 0, accepted: acceptedByTopic[topic] ?? 0 }
    }
    const events = byLabel(metrics.destinationEvents)
    const bytes = byLabel(metrics.destinationBytes)
    const destinations: StatsAnswer['destinations'] = {}
    for (const [name, destination] of server.destinations) {
      const stats = destination.stats?.() ?? {}
      const oldest = typeof stats.oldestPendingAt === 'number' && Number.isFinite(stats.oldestPendingAt) ? stats.oldestPendingAt : undefined
      destinations[name] = {
        eventsWritten: events[name] ?? 0,
        bytesWritten: bytes[name] ?? 0,
        pendingBytes: Number.isFinite(stats.pendingBytes) ? stats.pendingBytes as number : 0,
        oldestPendingAgeS: oldest === undefined ? null : Math.max(0, (now() - oldest) / 1000),
        ready: destination.ready?.() ?? { ready: true },
        details: stats
      }
    }
    return {
      instanceId: server.instanceId,
      startedAt: new Date(metrics.startedAt).toISOString(),
      uptimeS: (now() - metrics.startedAt) / 1000,
      events: {
        received: sum(metrics.eventsReceived),
        accepted: sum(metrics.eventsAccepted),
        rejected: sum(metrics.eventsRejected),
        rejectedByReason: byLabel(metrics.eventsRejected),
        byTopic
      },
      requests: {
        accepted: sum(metrics.requestsAccepted),
        rejected: sum(metrics.requestsRejected),
        rejectedByReason: byLabel(metrics.requestsRejected)
      },
      inFlightBytes: budget.held,
      destinations,
      lastError: metrics.lastError
    }
  })

  fastify.post('/admin/reload', {
    schema: { response: { 200: ReloadSchema } },
    onRequest: async (request) => {
      const { security } = server.settings
      if (security.adminAuthenticationKeys.length === 0) throw new EVS_ERR_ADMIN_DISABLED()
      const key = presentedKey(request.headers, security.authKeyHeader.toLowerCase())
      if (key === undefined || ringsOf(security).admin.match(key) === -1) throw new EVS_ERR_ADMIN_AUTH()
    }
  }, async () => {
    const { warnings } = await server.reload()
    return { status: 'reloaded' as const, warnings, destinations: [...server.destinations.keys()] }
  })
}
