import { readFile } from 'node:fs/promises'
import { dirname, extname, resolve } from 'node:path'
import { hostname } from 'node:os'
import type { FastifyInstance } from 'fastify'
import { parse as parseYaml } from 'yaml'
import { compile as compileProxyTrust } from '@fastify/proxy-addr'
import type { ConnectionType } from './connection.js'
import type { DestinationType } from './destination.js'
import { EVS_ERR_SETTINGS_READ } from './errors.js'
import { mapDssSettings } from './dss-settings.js'
import { registerTypes, type BuiltinType, type TypeRegistry } from './registry.js'
import { DESTINATION_COMMON_KEYS, SettingsSchema, type DestinationCommonSettings, type Settings } from './schemas/settings.js'
import { validate, type SettingsProblem } from './validation.js'

// The one path every settings document takes, for start, check and reload alike:
//   load (file or document, then --host/--port) → interpolate ${ENV} → map a DSS
//   eventServerSettings block → validate what the core knows → load the plugin types settings use
//   → validate each connection's and destination's options against its type.
// Its result, ResolvedSettings, is all that the server builds from.

/** Where settings come from, and the types known without a `plugins` entry. */
export interface SettingsInput {
  /** A JSON or YAML settings file (read again on each reload). */
  settingsFile?: string
  /** The settings document (parsed JSON or YAML, before `${ENV}` interpolation) when there is no file. */
  document?: unknown
  /** Folder that relative paths resolve against, when there is no file; the working directory by default. */
  baseDir?: string
  /** `--host` / `--port`: applied over the document. */
  overrides?: { host?: string, port?: string | number }
  env?: NodeJS.ProcessEnv
  /** Types known by name without a `plugins` entry (plugins/builtin.ts, handed in by the entry point). */
  builtinTypes?: readonly BuiltinType[]
}

export interface SettingsSource {
  /** The parsed document (JSON or YAML), before `${ENV}` interpolation. */
  document: unknown
  /** Folder that relative paths resolve against. */
  baseDir: string
  /** Where the document came from, for messages. */
  origin: string
}

export type CoreSettingsResult =
  | { ok: true, settings: Settings, warnings: string[] }
  | { ok: false, problems: SettingsProblem[], warnings: string[] }

/** Settings the core has validated; the options of each connection and destination are not yet. */
export interface CoreSettings {
  readonly settings: Settings
  /** Folder that relative paths resolve against. */
  readonly baseDir: string
  /** Where the settings came from, for messages. */
  readonly origin: string
  readonly warnings: readonly string[]
}

export interface ResolvedConnection {
  readonly name: string
  readonly definition: ConnectionType<any>
  /** Validated against the type's schema, defaults applied. */
  readonly options: unknown
}

export interface ResolvedDestination {
  readonly settings: DestinationCommonSettings
  readonly definition: DestinationType<any>
  /** Validated against the type's schema, defaults applied. */
  readonly options: unknown
}

/** Settings validated down to every type's options: what start, check and reload build from. */
export interface ResolvedSettings extends CoreSettings {
  readonly connections: readonly ResolvedConnection[]
  readonly destinations: readonly ResolvedDestination[]
}

export type SettingsResult<T> =
  | { ok: true, value: T }
  | { ok: false, problems: SettingsProblem[], warnings: readonly string[] }

/** Used when no settings file is given, and when a file defines no destination. */
export const DEFAULT_CONNECTION = { name: 'default', settings: { type: 'filesystem', root: './data' } }
export const DEFAULT_DESTINATION = { name: 'events', type: 'files', connection: 'default', path: 'events' }

export async function readSettingsFile (path: string): Promise<SettingsSource> {
  const file = resolve(path)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new EVS_ERR_SETTINGS_READ(file, (err as NodeJS.ErrnoException).code ?? (err as Error).message)
  }
  let document: unknown
  try {
    document = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new EVS_ERR_SETTINGS_READ(file, (err as Error).message.split('\n')[0] ?? 'unparsable')
  }
  return { document: document ?? {}, baseDir: dirname(file), origin: file }
}

function withOverrides (document: unknown, overrides: SettingsInput['overrides']): unknown {
  if (overrides === undefined || (overrides.host === undefined && overrides.port === undefined)) return document
  const doc = { ...(document as Record<string, unknown>) }
  const server = { ...(typeof doc.server === 'object' && doc.server !== null ? doc.server as Record<string, unknown> : {}) }
  if (overrides.host !== undefined) server.host = overrides.host
  if (overrides.port !== undefined) server.port = overrides.port
  doc.server = server
  return doc
}

/** Loads the document: the file's, or the one given; `--host` and `--port` over it. */
export async function readSource (input: SettingsInput): Promise<SettingsSource> {
  const source = input.settingsFile !== undefined
    ? await readSettingsFile(input.settingsFile)
    : { document: input.document ?? {}, baseDir: resolve(input.baseDir ?? process.cwd()), origin: 'settings given to buildServer' }
  return { ...source, document: withOverrides(source.document, input.overrides) }
}

const ENV_REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/** Replaces `${NAME}` and `${NAME:-default}` in every string; `$$` stands for a literal `$`. */
export function interpolateEnv (value: unknown, env: NodeJS.ProcessEnv, path = '', problems: SettingsProblem[] = []): unknown {
  if (typeof value === 'string') {
    if (!value.includes('$')) return value
    return value.replace(ENV_REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
      if (name === undefined) return '$'
      const found = env[name]
      if (found !== undefined && found !== '') return found
      if (fallback !== undefined) return fallback
      problems.push({ path: path === '' ? '/' : path, message: `environment variable ${name} is not set` })
      return match
    })
  }
  if (Array.isArray(value)) return value.map((item, i) => interpolateEnv(item, env, `${path}/${i}`, problems))
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {}
    for (const [key, item] of Object.entries(value)) out[key] = interpolateEnv(item, env, `${path}/${key}`, problems)
    return out
  }
  return value
}

function checkTimeZone (timeZone: string): boolean {
  try {
    // eslint-disable-next-line no-new
    new Intl.DateTimeFormat('en-US', { timeZone })
    return true
  } catch {
    return false
  }
}

function crossCheck (settings: Settings): SettingsProblem[] {
  const problems: SettingsProblem[] = []
  const { security, server } = settings
  if (security.requireAuthenticationForEvents && security.eventsAuthenticationKeys.length === 0) {
    problems.push({ path: '/security/eventsAuthenticationKeys', message: 'expected at least one key when requireAuthenticationForEvents is true' })
  }
  if (security.requireAuthenticationForStats && security.statsAuthenticationKeys.length === 0) {
    problems.push({ path: '/security/statsAuthenticationKeys', message: 'expected at least one key when requireAuthenticationForStats is true' })
  }
  if (!checkTimeZone(server.timeZone)) {
    problems.push({ path: '/server/timeZone', message: `expected an IANA time zone such as "UTC" or "Europe/Paris", got ${JSON.stringify(server.timeZone)}` })
  }
  // HTTP strips white space around header values, so such a key could never match. The message must
  // not show the key: it is a secret.
  for (const field of ['eventsAuthenticationKeys', 'statsAuthenticationKeys', 'adminAuthenticationKeys'] as const) {
    security[field].forEach(({ key }, i) => {
      if (key.trim() !== key) problems.push({ path: `/security/${field}/${i}/key`, message: 'expected a key without leading or trailing white space (the key is not shown)' })
    })
  }
  if (server.headersTimeoutS > server.requestTimeoutS) {
    problems.push({ path: '/server/headersTimeoutS', message: `expected at most requestTimeoutS (${server.requestTimeoutS}), got ${server.headersTimeoutS}` })
  }
  server.trustedProxies.forEach((proxy, i) => {
    try {
      compileProxyTrust(proxy)
    } catch {
      problems.push({ path: `/server/trustedProxies/${i}`, message: `expected an IP address, a CIDR range or "loopback"/"linklocal"/"uniquelocal", got ${JSON.stringify(proxy)}` })
    }
  })
  const keys = new Set(security.eventsAuthenticationKeys.map((k) => k.key))
  const names = new Set<string>()
  settings.destinations.forEach((destination, i) => {
    if (names.has(destination.name)) {
      problems.push({ path: `/destinations/${i}/name`, message: `expected a unique name, "${destination.name}" is used twice` })
    }
    names.add(destination.name)
    // Never echo the key itself: it is a secret.
    if (destination.requiredAuthKey !== undefined && !keys.has(destination.requiredAuthKey)) {
      problems.push({ path: `/destinations/${i}/requiredAuthKey`, message: 'expected one of the keys in security.eventsAuthenticationKeys' })
    }
  })
  return problems
}

/**
 * Validates everything the core knows: interpolation, the DSS block, the settings schema and the
 * cross-field rules. Type-specific options are validated once their plugins are loaded.
 */
export function parseCoreSettings (document: unknown, env: NodeJS.ProcessEnv = process.env): CoreSettingsResult {
  const problems: SettingsProblem[] = []
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    return { ok: false, problems: [{ path: '/', message: 'expected a settings object' }], warnings: [] }
  }
  const interpolated = interpolateEnv(document, env, '', problems) as Record<string, unknown>
  const mapped = mapDssSettings(interpolated)
  problems.push(...mapped.problems)
  const doc = mapped.document
  const hasDestinations = Array.isArray(doc.destinations) && doc.destinations.length > 0
  if (!hasDestinations) {
    const connections = (typeof doc.connections === 'object' && doc.connections !== null) ? doc.connections as Record<string, unknown> : {}
    doc.connections = { [DEFAULT_CONNECTION.name]: DEFAULT_CONNECTION.settings, ...connections }
    doc.destinations = [DEFAULT_DESTINATION]
    mapped.warnings.push(`no destination is defined: using the default destination "${DEFAULT_DESTINATION.name}" (all topics into ./data/events)`)
  }
  const result = validate(SettingsSchema, doc)
  if (!result.ok) return { ok: false, problems: [...problems, ...result.problems], warnings: mapped.warnings }
  problems.push(...crossCheck(result.value))
  if (problems.length > 0) return { ok: false, problems, warnings: mapped.warnings }
  return { ok: true, settings: result.value, warnings: mapped.warnings }
}

/** Loads the settings and validates everything the core knows (the first half of the path). */
export async function readCoreSettings (input: SettingsInput): Promise<SettingsResult<CoreSettings>> {
  const source = await readSource(input)
  const core = parseCoreSettings(source.document, input.env ?? process.env)
  if (!core.ok) return core
  return { ok: true, value: { settings: core.settings, baseDir: source.baseDir, origin: source.origin, warnings: core.warnings } }
}

function known (kind: string, names: Iterable<string>): string {
  const list = [...new Set(names)].sort().map((n) => JSON.stringify(n)).join(', ')
  if (list === '') return `expected a ${kind} type added by a plugin listed in "plugins"`
  return `expected a ${kind} type: one of ${list}, or a type added by a plugin listed in "plugins"`
}

function without (block: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(block)) if (!keys.includes(key)) out[key] = value
  return out
}

/** Validates each connection's and destination's own options against its type's schema. */
function resolveTypes (registry: TypeRegistry, core: CoreSettings, logger: FastifyInstance['log'], builtins: readonly BuiltinType[]): SettingsResult<ResolvedSettings> {
  const { settings, baseDir } = core
  const problems: SettingsProblem[] = []
  const connections: ResolvedConnection[] = []
  const destinations: ResolvedDestination[] = []
  const builtinNames = (kind: BuiltinType['kind']): string[] => builtins.filter((b) => b.kind === kind).map((b) => b.type)

  for (const [name, block] of Object.entries(settings.connections)) {
    const path = `/connections/${name}`
    const definition = registry.connectionTypes.get(block.type)
    if (definition === undefined) {
      problems.push({ path: `${path}/type`, message: `${known('connection', [...builtinNames('connection'), ...registry.connectionTypes.keys()])}, got ${JSON.stringify(block.type)}` })
      continue
    }
    const result = validate(definition.schema, without(block, ['type']), path)
    if (!result.ok) {
      problems.push(...result.problems)
      continue
    }
    problems.push(...(definition.check?.(result.value, { name, baseDir, logger }) ?? []).map((p) => ({ ...p, path: path + p.path })))
    connections.push({ name, definition, options: result.value })
  }

  const connectionTypes = new Map(Object.entries(settings.connections).map(([name, c]) => [name, c.type]))
  settings.destinations.forEach((block, i) => {
    const path = `/destinations/${i}`
    const definition = registry.destinationTypes.get(block.type)
    if (definition === undefined) {
      problems.push({ path: `${path}/type`, message: `${known('destination', [...builtinNames('destination'), ...registry.destinationTypes.keys()])}, got ${JSON.stringify(block.type)}` })
      return
    }
    const result = validate(definition.schema, without(block, DESTINATION_COMMON_KEYS), path)
    if (!result.ok) {
      problems.push(...result.problems)
      return
    }
    problems.push(...(definition.check?.(result.value, { name: block.name, connections: connectionTypes }) ?? []).map((p) => ({ ...p, path: path + p.path })))
    destinations.push({ settings: block, definition, options: result.value })
  })

  if (problems.length > 0) return { ok: false, problems, warnings: core.warnings }
  return { ok: true, value: { ...core, connections, destinations } }
}

/**
 * The second half of the path: registers into `app` the plugins settings name and the built-in
 * types they use, then validates every connection's and destination's options against its type.
 */
export async function resolveSettings (app: FastifyInstance, core: CoreSettings, builtins: readonly BuiltinType[] = []): Promise<SettingsResult<ResolvedSettings>> {
  const { settings } = core
  const used = [...Object.values(settings.connections).map((c) => c.type), ...settings.destinations.map((d) => d.type)]
  await registerTypes(app, settings.plugins, used, core.baseDir, builtins)
  return resolveTypes(app.eventServerTypes, core, app.log, builtins)
}

/**
 * The whole path, for a caller whose Fastify instance does not depend on the settings (check and
 * reload load plugin types into a scratch instance). Throws only when the file cannot be read or a
 * plugin cannot be loaded; invalid settings are problems in the result.
 */
export async function loadSettings (app: FastifyInstance, input: SettingsInput): Promise<SettingsResult<ResolvedSettings>> {
  const core = await readCoreSettings(input)
  if (!core.ok) return core
  return await resolveSettings(app, core.value, input.builtinTypes)
}

/**
 * `<hostname>-<port>`: two instances on one host cannot share a port. With port 0 (any free port,
 * known only after listening) the process id stands in for it, for the same reason.
 */
export function defaultInstanceId (port: number): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9.-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 50)
  return `${host === '' ? 'evs' : host}-${port === 0 ? `p${process.pid}` : port}`
}
