import { readFile } from 'node:fs/promises'
import { dirname, extname, resolve } from 'node:path'
import { hostname } from 'node:os'
import { parse as parseYaml } from 'yaml'
import { compile as compileProxyTrust } from '@fastify/proxy-addr'
import { EVS_ERR_SETTINGS_READ } from './errors.js'
import { mapDssSettings } from './dss-settings.js'
import { SettingsSchema, type Settings } from './schemas/settings.js'
import { validate, type SettingsProblem } from './validation.js'

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

/**
 * `<hostname>-<port>`: two instances on one host cannot share a port. With port 0 (any free port,
 * known only after listening) the process id stands in for it, for the same reason.
 */
export function defaultInstanceId (port: number): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9.-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 50)
  return `${host === '' ? 'evs' : host}-${port === 0 ? `p${process.pid}` : port}`
}
