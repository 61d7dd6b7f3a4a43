import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { KeyRing } from './auth.js'
import type { Connection } from './connection.js'
import type { Destination } from './destination.js'
import { EVS_ERR_SETTINGS_INVALID } from './errors.js'
import { ingestRoutes } from './ingest.js'
import { Router } from './router.js'
import type { Settings } from './schemas/settings.js'
import { defaultInstanceId, parseCoreSettings } from './settings.js'
import { ZonedTime } from './time.js'
import { registerTypes, resolveTypes, type ResolvedConnection, type ResolvedDestination } from './types.js'
import { formatProblems, type SettingsProblem } from './validation.js'

export interface EventServer {
  readonly settings: Settings
  readonly instanceId: string
  readonly connections: ReadonlyMap<string, Connection>
  readonly destinations: ReadonlyMap<string, Destination>
  readonly warnings: readonly string[]
}

declare module 'fastify' {
  interface FastifyInstance {
    eventServer: EventServer
  }
}

export interface BuildServerOptions {
  /** The settings document (parsed JSON or YAML, before `${ENV}` interpolation); `{}` for the defaults. */
  document?: unknown
  /** Folder that relative paths in settings resolve against; defaults to the working directory. */
  baseDir?: string
  env?: NodeJS.ProcessEnv
  /** Pino options, a logger instance, or false. Defaults to JSON logs at `server.logLevel`. */
  logger?: FastifyServerOptions['logger']
  loggerInstance?: FastifyServerOptions['loggerInstance']
  /** Milliseconds since the epoch; for tests. */
  now?: () => number
}

function settingsError (problems: readonly SettingsProblem[]): Error {
  return new EVS_ERR_SETTINGS_INVALID(formatProblems(problems))
}

interface RuntimeOptions {
  settings: Settings
  baseDir: string
  instanceId: string
  warnings: string[]
  connections: ResolvedConnection[]
  destinations: ResolvedDestination[]
  now: () => number
}

async function eventServerRuntime (fastify: FastifyInstance, options: RuntimeOptions): Promise<void> {
  const { settings, baseDir, instanceId, now } = options
  const connections = new Map<string, Connection>()
  const destinations = new Map<string, Destination>()
  fastify.decorate('eventServer', { settings, instanceId, connections, destinations, warnings: options.warnings })

  // Requests still running at shutdown end their connection, so close() need not wait for the
  // clients' keep-alive timeouts.
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  fastify.addHook('onSend', async (_request, reply) => {
    if (closing) void reply.header('connection', 'close')
  })

  // Destinations close before connections: closing flushes into them.
  fastify.addHook('onClose', async () => {
    const results = await Promise.allSettled([...destinations.values()].map(async (d) => await d.close()))
    for (const [i, r] of results.entries()) {
      if (r.status === 'rejected') fastify.log.error({ err: r.reason, destination: [...destinations.keys()][i] }, 'destination did not close cleanly')
    }
    await Promise.allSettled([...connections.values()].map(async (c) => await c.close()))
  })

  for (const { name, definition, options: connectionOptions } of options.connections) {
    connections.set(name, definition.create(connectionOptions, { name, baseDir, logger: fastify.log.child({ connection: name }) }))
  }
  const stateRoot = resolve(baseDir, settings.server.stateDir)
  const routes: Array<{ settings: ResolvedDestination['settings'], destination: Destination }> = []
  for (const { settings: common, definition, options: destinationOptions } of options.destinations) {
    const stateDir = join(stateRoot, common.name)
    await mkdir(stateDir, { recursive: true })
    const destination = definition.create(destinationOptions, {
      name: common.name,
      baseDir,
      stateDir,
      instanceId,
      timeZone: settings.server.timeZone,
      logger: fastify.log.child({ destination: common.name }),
      now,
      connection: (name) => connections.get(name)
    })
    destinations.set(common.name, destination)
    routes.push({ settings: common, destination })
  }
  await Promise.all([...destinations.values()].map(async (d) => await d.open()))

  const keys = new KeyRing(settings.security.eventsAuthenticationKeys.map((k) => k.key))
  await fastify.register(ingestRoutes, {
    settings,
    keys,
    router: new Router(routes, keys),
    time: new ZonedTime(settings.server.timeZone),
    now
  })
}

const runtimePlugin = fp(eventServerRuntime, { fastify: '5.x', name: 'dss-event-server', dependencies: ['dss-event-server-types'] })

function errorHandler (this: FastifyInstance, error: FastifyError, request: Parameters<Parameters<FastifyInstance['setErrorHandler']>[0]>[1], reply: Parameters<Parameters<FastifyInstance['setErrorHandler']>[0]>[2]): void {
  const statusCode = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500
  const code = error.code ?? 'EVS_ERR_INTERNAL'
  if (statusCode >= 500) request.log.error({ err: error, code }, 'request failed')
  else request.log.info({ code, statusCode, reqId: request.id }, error.message)
  if (statusCode === 503) void reply.header('retry-after', '5')
  const message = statusCode >= 500 && !code.startsWith('EVS_ERR_') && !code.startsWith('FST_') ? 'Internal error; see the server log' : error.message
  void reply.code(statusCode).send({ statusCode, code, error: message })
}

/**
 * Builds the server from a settings document: validates everything first (throwing
 * EVS_ERR_SETTINGS_INVALID with every problem), then creates connections and destinations and runs
 * their crash recovery. Call `listen()` on the result.
 */
export async function buildServer (options: BuildServerOptions = {}): Promise<FastifyInstance> {
  const baseDir = resolve(options.baseDir ?? process.cwd())
  const core = parseCoreSettings(options.document ?? {}, options.env ?? process.env)
  if (!core.ok) throw settingsError(core.problems)
  const { settings } = core
  const server = settings.server

  const fastify = Fastify({
    ...(options.loggerInstance !== undefined
      ? { loggerInstance: options.loggerInstance }
      : { logger: options.logger ?? { level: server.logLevel } }),
    trustProxy: server.trustedProxies.length > 0 ? server.trustedProxies : false,
    forceCloseConnections: 'idle',
    // One line per request at info would cost more than the request itself; rejections are logged.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: server.bodyLimit,
    return503OnClosing: true
  })
  try {
    fastify.setErrorHandler(errorHandler)
    for (const warning of core.warnings) fastify.log.warn(warning)
    await registerTypes(fastify, settings, baseDir)
    const types = resolveTypes(fastify.eventServerTypes, settings, baseDir, fastify.log)
    if (!types.ok) throw settingsError(types.problems)
    await fastify.register(runtimePlugin, {
      settings,
      baseDir,
      instanceId: server.instanceId ?? defaultInstanceId(server.port),
      warnings: core.warnings,
      connections: types.connections,
      destinations: types.destinations,
      now: options.now ?? Date.now
    })
    await fastify.ready()
  } catch (err) {
    await fastify.close().catch(() => {})
    throw err
  }
  return fastify
}

export interface ConnectionProbe {
  name: string
  type: string
  ok: boolean
  /** The store's own message when the probe failed. */
  error?: string
}

export interface CheckResult {
  problems: SettingsProblem[]
  warnings: string[]
  /** With `probeConnections`: one entry per connection, when settings are valid. */
  probes?: ConnectionProbe[]
}

const PROBE_TIMEOUT_MS = 30_000

async function probe (connection: Connection): Promise<ConnectionProbe> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      connection.check(),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS / 1000} s`)), PROBE_TIMEOUT_MS) })
    ])
    return { name: connection.name, type: connection.type, ok: true }
  } catch (err) {
    const e = err as Error & { code?: unknown }
    return { name: connection.name, type: connection.type, ok: false, error: `${typeof e.code === 'string' ? `${e.code}: ` : ''}${e.message}` }
  } finally {
    clearTimeout(timer)
    await connection.close().catch(() => {})
  }
}

/**
 * Validates a settings document as `buildServer` would, loading the plugins it names, without
 * creating destinations. With `probeConnections`, also writes and deletes a probe object through
 * every connection and reports, per connection, whether that worked.
 */
export async function checkSettings (document: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env, options: { probeConnections?: boolean } = {}): Promise<CheckResult> {
  const core = parseCoreSettings(document, env)
  if (!core.ok) return { problems: core.problems, warnings: core.warnings }
  const fastify = Fastify({ logger: false })
  try {
    await registerTypes(fastify, core.settings, baseDir)
    const types = resolveTypes(fastify.eventServerTypes, core.settings, baseDir, fastify.log)
    if (!types.ok) return { problems: types.problems, warnings: core.warnings }
    if (options.probeConnections !== true) return { problems: [], warnings: core.warnings }
    const probes = await Promise.all(types.connections.map(async ({ name, definition, options: connectionOptions }) =>
      await probe(definition.create(connectionOptions, { name, baseDir, logger: fastify.log }))))
    return { problems: [], warnings: core.warnings, probes }
  } finally {
    await fastify.close()
  }
}
