import type { FastifyInstance, FastifyRequest } from 'fastify'
import { KeyRing, presentedKey } from './auth.js'
import { EVS_ERR_ADMIN_AUTH, EVS_ERR_ADMIN_DISABLED, EVS_ERR_STATS_AUTH } from './errors.js'
import type { MemoryBudget } from './memory-budget.js'
import type { EventServer } from './server.js'
import type { SecuritySettings } from './schemas/settings.js'

interface MetricValue { value: number, labels: Record<string, string | number> }

async function values (server: EventServer, name: string): Promise<MetricValue[]> {
  const metric = server.metrics.registry.getSingleMetric(name)
  if (metric === undefined) return []
  return (await metric.get()).values as MetricValue[]
}

function sum (list: MetricValue[]): number {
  return list.reduce((total, v) => total + v.value, 0)
}

function byLabel (list: MetricValue[], label: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const v of list) {
    const key = String(v.labels[label])
    out[key] = (out[key] ?? 0) + v.value
  }
  return out
}

/** `/health`, `/ready`, `/stats`, `/metrics` and `/admin/reload`. */
export async function opsRoutes (fastify: FastifyInstance, { server, now, budget }: { server: EventServer, now: () => number, budget: MemoryBudget }): Promise<void> {
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

  fastify.get('/health', async () => ({ status: 'ok' }))

  fastify.get('/ready', async (_request, reply) => {
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
    void reply.header('content-type', server.metrics.registry.contentType)
    return await server.metrics.registry.metrics()
  })

  fastify.get('/stats', { onRequest: statsAuth }, async () => {
    const received = await values(server, 'evs_events_received_total')
    const accepted = await values(server, 'evs_events_accepted_total')
    const rejectedEvents = await values(server, 'evs_events_rejected_total')
    const rejectedRequests = await values(server, 'evs_requests_rejected_total')
    const receivedByTopic = byLabel(received, 'topic')
    const acceptedByTopic = byLabel(accepted, 'topic')
    const byTopic: Record<string, { received: number, accepted: number }> = {}
    for (const topic of new Set([...Object.keys(receivedByTopic), ...Object.keys(acceptedByTopic)])) {
      byTopic[topic] = { received: receivedByTopic[topic] ?? 0, accepted: acceptedByTopic[topic] ?? 0 }
    }
    const events = byLabel(await values(server, 'evs_destination_events_total'), 'destination')
    const bytes = byLabel(await values(server, 'evs_destination_bytes_total'), 'destination')
    const completed = byLabel(await values(server, 'evs_files_completed_total'), 'destination')
    const destinations: Record<string, unknown> = {}
    for (const [name, destination] of server.destinations) {
      const stats = destination.stats?.() ?? {}
      const oldest = typeof stats.oldestPendingAt === 'number' ? stats.oldestPendingAt : undefined
      destinations[name] = {
        eventsWritten: events[name] ?? 0,
        bytesWritten: bytes[name] ?? 0,
        filesCompleted: completed[name] ?? 0,
        openFiles: stats.openFiles ?? 0,
        pendingBytes: stats.pendingBytes ?? 0,
        oldestPendingAgeS: oldest === undefined ? null : Math.max(0, (now() - oldest) / 1000),
        ready: destination.ready?.() ?? { ready: true },
        details: stats
      }
    }
    return {
      instanceId: server.instanceId,
      startedAt: new Date(server.metrics.startedAt).toISOString(),
      uptimeS: (now() - server.metrics.startedAt) / 1000,
      events: {
        received: sum(received),
        accepted: sum(accepted),
        rejected: sum(rejectedEvents),
        rejectedByReason: byLabel(rejectedEvents, 'reason'),
        byTopic
      },
      requests: {
        accepted: sum(await values(server, 'evs_requests_accepted_total')),
        rejected: sum(rejectedRequests),
        rejectedByReason: byLabel(rejectedRequests, 'reason')
      },
      inFlightBytes: budget.held,
      destinations,
      lastError: server.metrics.lastError
    }
  })

  fastify.post('/admin/reload', {
    onRequest: async (request) => {
      const { security } = server.settings
      if (security.adminAuthenticationKeys.length === 0) throw new EVS_ERR_ADMIN_DISABLED()
      const key = presentedKey(request.headers, security.authKeyHeader.toLowerCase())
      if (key === undefined || ringsOf(security).admin.match(key) === -1) throw new EVS_ERR_ADMIN_AUTH()
    }
  }, async () => {
    const { warnings } = await server.reload()
    return { status: 'reloaded', warnings, destinations: [...server.destinations.keys()] }
  })
}
