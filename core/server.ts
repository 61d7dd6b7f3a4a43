import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Socket } from 'node:net'
import type { SecureContextOptions } from 'node:tls'
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Connection } from './connection.js'
import type { Destination } from './destination.js'
import { clientErrorHandler } from './client-error.js'
import { installErrorHandling } from './error-handling.js'
import { EVS_ERR_BODY_INTERRUPTED, EVS_ERR_RELOAD_REJECTED, EVS_ERR_SETTINGS_INVALID } from './errors.js'
import type { BodyInterrupts } from './request-body.js'
import { ingestRoutes } from './ingest.js'
import { MemoryBudget } from './memory-budget.js'
import { Metrics } from './metrics.js'
import { opsRoutes } from './ops-routes.js'
import { Pipeline, type PipelineSpec } from './pipeline.js'
import { PipelineSwitch } from './pipeline-switch.js'
import { TYPE_REGISTRY_PLUGIN } from './registry.js'
import type { ServerSettings, Settings, TlsSettings } from './schemas/settings.js'
import { defaultInstanceId, loadSettings, readCoreSettings, resolveSettings, type ResolvedSettings, type SettingsInput } from './settings.js'
import { formatProblems, type SettingsProblem } from './validation.js'

export interface EventServer {
  readonly instanceId: string
  readonly metrics: Metrics
  /** The settings, connections and destinations in force (they change on reload). */
  readonly settings: Settings
  readonly connections: ReadonlyMap<string, Connection>
  readonly destinations: ReadonlyMap<string, Destination>
  readonly warnings: readonly string[]
  readonly closing: boolean
  /**
   * Re-reads the settings (the file, when built from one), validates them and swaps in new
   * connections and destinations. Requests wait during the swap; none is dropped or written twice.
   * Rejects with EVS_ERR_RELOAD_REJECTED, keeping the running settings, when the new ones are invalid.
   */
  reload(): Promise<{ warnings: string[] }>
}

declare module 'fastify' {
  interface FastifyInstance {
    eventServer: EventServer
  }
}

export interface BuildServerOptions extends SettingsInput {
  /** Pino options or false. Defaults to JSON logs at `server.logLevel`. */
  logger?: FastifyServerOptions['logger']
  /** Human-readable logs (pino-pretty) instead of JSON lines. */
  pretty?: boolean
  loggerInstance?: FastifyServerOptions['loggerInstance']
  /** Milliseconds since the epoch; for tests. */
  now?: () => number
}

function settingsError (problems: readonly SettingsProblem[]): Error {
  return new EVS_ERR_SETTINGS_INVALID(formatProblems(problems))
}

/** The settings path of core/settings.ts, down to every type's options, loading plugin types into `fastify`. */
async function resolveSpec (fastify: FastifyInstance, options: BuildServerOptions): Promise<ResolvedSettings> {
  const result = await loadSettings(fastify, options)
  if (!result.ok) throw settingsError(result.problems)
  return result.value
}

/** Node's own limits on how long a client may take; each ends the connection when it runs out. */
function timeouts (server: ServerSettings): { headersTimeout: number, requestTimeout: number, keepAliveTimeout: number, connectionsCheckingInterval: number } {
  const headersTimeout = server.headersTimeoutS * 1000
  const requestTimeout = server.requestTimeoutS * 1000
  return {
    headersTimeout,
    requestTimeout,
    keepAliveTimeout: server.keepAliveTimeoutS * 1000,
    // Node checks the header and request deadlines on this period (30 s by default).
    connectionsCheckingInterval: Math.max(100, Math.min(headersTimeout, requestTimeout, 30_000) / 4)
  }
}

function tlsOptions (tls: TlsSettings, baseDir: string): SecureContextOptions & { requestCert: boolean, rejectUnauthorized: boolean } {
  const read = (file: string): Buffer => readFileSync(resolve(baseDir, file))
  return {
    cert: read(tls.cert),
    key: read(tls.key),
    ...(tls.ca !== undefined ? { ca: read(tls.ca) } : {}),
    requestCert: tls.ca !== undefined,
    rejectUnauthorized: tls.ca !== undefined
  }
}

// Settings read once at start: a reload that changes them logs that a restart is needed.
function restartOnlyChanges (before: Settings, after: Settings): string[] {
  const fields: Array<[string, unknown, unknown]> = [
    ['server.host', before.server.host, after.server.host],
    ['server.port', before.server.port, after.server.port],
    ['server.instanceId', before.server.instanceId, after.server.instanceId],
    ['server.trustedProxies', before.server.trustedProxies, after.server.trustedProxies],
    ['server.logLevel', before.server.logLevel, after.server.logLevel],
    ['server.requestTimeoutS', before.server.requestTimeoutS, after.server.requestTimeoutS],
    ['server.headersTimeoutS', before.server.headersTimeoutS, after.server.headersTimeoutS],
    ['server.keepAliveTimeoutS', before.server.keepAliveTimeoutS, after.server.keepAliveTimeoutS],
    ['server.tls (on or off)', before.server.tls === undefined, after.server.tls === undefined]
  ]
  return fields
    .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b))
    .map(([name]) => `${name} changed: it takes effect at the next restart`)
}

/**
 * Connections that never send a byte are invisible to Node's header and request timeouts, and
 * would hold every shutdown up to its limit: they are closed after `silentMs`, and at once when the
 * server stops.
 */
function guardConnections (fastify: FastifyInstance, silentMs: number): void {
  const open = new Set<Socket>()
  fastify.server.on('connection', (socket: Socket) => {
    // No 'data' listener: it would take the socket off Node's fast path to the HTTP parser.
    open.add(socket)
    const timer = setTimeout(() => { if (socket.bytesRead === 0) socket.destroy() }, silentMs)
    timer.unref()
    socket.once('close', () => {
      clearTimeout(timer)
      open.delete(socket)
    })
  })
  fastify.addHook('preClose', async () => {
    for (const socket of open) if (socket.bytesRead === 0) socket.destroy()
  })
}

/** How long a reload lets bodies still arriving finish, while new requests wait. */
const RELOAD_BODY_GRACE_MS = 1000

interface RuntimeOptions {
  spec: PipelineSpec
  instanceId: string
  options: BuildServerOptions
  metrics: Metrics
  now: () => number
}

async function eventServerRuntime (fastify: FastifyInstance, { spec, instanceId, options, metrics, now }: RuntimeOptions): Promise<void> {
  let reloading: Promise<{ warnings: string[] }> | undefined
  let closing = false
  const budget = new MemoryBudget(now, (held) => { metrics.inFlightBytes = held })
  const pipelineContext = { instanceId, logger: fastify.log, metrics, now }
  const pipelines = new PipelineSwitch(await Pipeline.open(spec, pipelineContext), fastify.log)
  metrics.destinations = () => pipelines.current.destinations.values()
  const bodies: BodyInterrupts = new Set()
  /**
   * Ends, after `graceMs`, the bodies still arriving then: a slow client would otherwise hold a
   * reload (and every request waiting for it) or a stop up to its limit. Its client gets 503.
   */
  const interruptBodies = (graceMs: number): (() => void) => {
    const timer = setTimeout(() => {
      for (const interrupt of [...bodies]) interrupt(new EVS_ERR_BODY_INTERRUPTED())
    }, graceMs)
    timer.unref()
    return () => clearTimeout(timer)
  }
  guardConnections(fastify, pipelines.current.settings.server.headersTimeoutS * 1000)

  async function reload (): Promise<{ warnings: string[] }> {
    const scratch = Fastify({ loggerInstance: fastify.log })
    let next: PipelineSpec
    try {
      next = await resolveSpec(scratch, options)
    } catch (err) {
      const e = err as Error & { code?: string }
      fastify.log.error({ code: e.code }, `reload rejected, the running settings are kept: ${e.message}`)
      throw new EVS_ERR_RELOAD_REJECTED(e.message)
    } finally {
      await scratch.close()
    }
    const previous = pipelines.current.spec
    const warnings = [...next.warnings, ...restartOnlyChanges(previous.settings, next.settings)]
    for (const warning of warnings) fastify.log.warn(warning)
    let cancel = (): void => {}
    try {
      await pipelines.swap(async () => await Pipeline.open(next, pipelineContext), async () => await Pipeline.open(previous, pipelineContext), () => { cancel = interruptBodies(RELOAD_BODY_GRACE_MS) })
    } finally {
      cancel()
    }
    const tls = next.settings.server.tls
    if (tls !== undefined && 'setSecureContext' in fastify.server) {
      // Renewed certificates are picked up on reload; new connections use them.
      (fastify.server as unknown as { setSecureContext: (o: SecureContextOptions) => void }).setSecureContext(tlsOptions(tls, next.baseDir))
    }
    fastify.log.info({ destinations: [...pipelines.current.destinations.keys()] }, 'settings reloaded')
    return { warnings }
  }

  const server: EventServer = {
    instanceId,
    metrics,
    get settings () { return pipelines.current.settings },
    get connections () { return pipelines.current.connections },
    get destinations () { return pipelines.current.destinations },
    get warnings () { return pipelines.current.spec.warnings },
    get closing () { return closing },
    async reload () {
      // Signals arriving during a reload join it rather than queueing another.
      reloading ??= reload().finally(() => { reloading = undefined })
      return await reloading
    }
  }
  fastify.decorate('eventServer', server)

  // Requests still running at shutdown end their connection, so close() need not wait for the
  // clients' keep-alive timeouts.
  fastify.addHook('preClose', async () => {
    closing = true
    // Bodies that arrive soon are taken; slower ones would hold the stop up to its limit.
    const { shutdownTimeoutS } = pipelines.current.settings.server
    interruptBodies(Math.min(10_000, shutdownTimeoutS * 1000 / 3))
  })
  fastify.addHook('onSend', async (_request, reply) => {
    if (closing) void reply.header('connection', 'close')
  })
  fastify.addHook('onClose', async () => {
    await reloading?.catch(() => {})
    await pipelines.current.close(fastify.log)
  })

  await fastify.register(ingestRoutes, { runtime: { metrics, budget, now, pipelines, bodies } })
  await fastify.register(opsRoutes, {
    runtime: {
      instanceId,
      metrics,
      budget,
      now,
      get settings () { return pipelines.current.settings },
      get destinations () { return pipelines.current.destinations },
      get closing () { return closing },
      reload: async () => await server.reload()
    }
  })
}

const runtimePlugin = fp(eventServerRuntime, { fastify: '5.x', name: 'dss-event-server', dependencies: [TYPE_REGISTRY_PLUGIN] })

/**
 * Builds the server from settings: validates everything first (throwing EVS_ERR_SETTINGS_INVALID
 * with every problem), then creates connections and destinations and runs their crash recovery.
 * Call `listen()` on the result.
 */
export async function buildServer (options: BuildServerOptions = {}): Promise<FastifyInstance> {
  const core = await readCoreSettings(options)
  if (!core.ok) throw settingsError(core.problems)
  const source = core.value
  const server = source.settings.server
  const limits = timeouts(server)
  const now = options.now ?? Date.now
  const metrics = new Metrics(now)
  const fastify = Fastify({
    ...(options.loggerInstance !== undefined
      ? { loggerInstance: options.loggerInstance }
      : { logger: options.logger ?? { level: server.logLevel, ...(options.pretty === true ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard', ignore: 'pid,hostname' } } } : {}) } }),
    ...(server.tls !== undefined ? { https: { ...tlsOptions(server.tls, source.baseDir), ...limits } } : { http: limits }),
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    trustProxy: server.trustedProxies.length > 0 ? server.trustedProxies : false,
    forceCloseConnections: 'idle',
    // One line per request at info would cost more than the request itself; rejections are logged.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    clientErrorHandler: clientErrorHandler(metrics, now),
    // Crash recovery of many files may take longer than Fastify's 10 s for a plugin to start.
    pluginTimeout: 0
  })
  // First, so that routes added by plugins named in settings get the same handling.
  installErrorHandling(fastify, metrics, now)
  try {
    const resolved = await resolveSettings(fastify, source, options.builtinTypes)
    if (!resolved.ok) throw settingsError(resolved.problems)
    const spec = resolved.value
    for (const warning of spec.warnings) fastify.log.warn(warning)
    await fastify.register(runtimePlugin, {
      spec,
      instanceId: server.instanceId ?? defaultInstanceId(server.port),
      options,
      metrics,
      now
    })
    await fastify.ready()
  } catch (err) {
    await fastify.close().catch(() => {})
    throw err
  }
  return fastify
}
