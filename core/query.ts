import Fastify, { type FastifyBaseLogger } from 'fastify'
import type { Connection } from './connection.js'
import { newQueryStats, type DestinationType, type EventQuery, type QueryProblem, type QueryStats, type StoredEvent } from './destination.js'
import { EVS_ERR_QUERY_DESTINATION, EVS_ERR_QUERY_INVALID, EVS_ERR_SETTINGS_INVALID } from './errors.js'
import { parseTimeBound } from './query-time.js'
import type { BuiltinType } from './registry.js'
import { loadSettings } from './settings.js'
import { formatProblems } from './validation.js'
import { combineConditions, equalsAny, parseFieldPath, parseWhere, type WhereCondition } from './where.js'

export interface QueryEventsOptions {
  /** A JSON or YAML settings file, as `start --config` takes. */
  settingsFile?: string
  /** Or the settings document itself (before `${ENV}` interpolation). */
  document?: unknown
  /** Folder that relative paths resolve against, with `document`; the working directory by default. */
  baseDir?: string
  env?: NodeJS.ProcessEnv
  /** Types known by name without a `plugins` entry (plugins/builtin.ts; the package entry hands it in). */
  builtinTypes?: readonly BuiltinType[]
  /** The destination to read; may be left out when settings define only one. */
  destination?: string
  /**
   * Time range on `serverTimestamp`: `from` inclusive, `to` exclusive. A string is an ISO date or
   * date-time in `server.timeZone` unless it has an offset, or `now`, `today`, `yesterday`, `-2h`...
   */
  from?: Date | number | string
  to?: Date | number | string
  topics?: readonly string[]
  routingKeys?: readonly string[]
  /** `clientEvent.authUser` is one of these. */
  users?: readonly string[]
  /** `clientEvent.msgType` is one of these. */
  msgTypes?: readonly string[]
  /** `origAddress` is one of these. */
  addresses?: readonly string[]
  /** Expressions of the `--where` grammar (see where.ts), combined with AND. */
  where?: string | readonly string[]
  /** A test of your own, after all the others. */
  filter?: (event: StoredEvent) => boolean
  limit?: number
  order?: 'stored' | 'time'
  /** Keep reading new events as they are written, until `signal` aborts. */
  follow?: boolean | { intervalMs?: number }
  signal?: AbortSignal
  /** Counters to add to (files listed, opened, bytes, matches, problems); see QueryStats. */
  stats?: QueryStats
  /** Files and lines that cannot be read; the query goes on without them. */
  onProblem?: (problem: QueryProblem) => void
  now?: () => number
  logger?: FastifyBaseLogger
  /** Wraps each connection the query creates: to instrument it (count calls) or restrict it. */
  wrapConnection?: (connection: Connection) => Connection
}

export interface EventQueryResult extends AsyncIterable<StoredEvent> {
  readonly stats: QueryStats
}

function timeBound (value: Date | number | string | undefined, timeZone: string, now: number, option: string): number | undefined {
  if (value === undefined) return undefined
  if (value instanceof Date) return value.getTime()
  if (typeof value === 'number') return value
  return parseTimeBound(value, timeZone, now, option)
}

/** The conditions on event fields that the options ask for (not time, topic or routing key). */
export function queryConditions (options: Pick<QueryEventsOptions, 'users' | 'msgTypes' | 'addresses' | 'where'>): WhereCondition[] {
  const conditions: WhereCondition[] = []
  if (options.users !== undefined && options.users.length > 0) conditions.push(equalsAny(parseFieldPath('clientEvent.authUser'), options.users))
  if (options.msgTypes !== undefined && options.msgTypes.length > 0) conditions.push(equalsAny(parseFieldPath('clientEvent.msgType'), options.msgTypes))
  if (options.addresses !== undefined && options.addresses.length > 0) conditions.push(equalsAny(parseFieldPath('origAddress'), options.addresses))
  const where = typeof options.where === 'string' ? [options.where] : options.where ?? []
  for (const expression of where) conditions.push(parseWhere(expression))
  return conditions
}

async function * run (options: QueryEventsOptions, stats: QueryStats): AsyncGenerator<StoredEvent> {
  const now = options.now ?? Date.now
  // The settings path of start and check (core/settings.ts): plugins load into a Fastify instance that never listens.
  const fastify = Fastify({ logger: false })
  const connections = new Map<string, Connection>()
  const opened: Connection[] = []
  try {
    const result = await loadSettings(fastify, {
      ...(options.settingsFile !== undefined ? { settingsFile: options.settingsFile } : { document: options.document ?? {}, baseDir: options.baseDir ?? process.cwd() }),
      env: options.env ?? process.env,
      ...(options.builtinTypes !== undefined ? { builtinTypes: options.builtinTypes } : {})
    })
    if (!result.ok) throw new EVS_ERR_SETTINGS_INVALID(formatProblems(result.problems))
    const types = result.value
    const baseDir = types.baseDir
    const names = types.destinations.map((d) => d.settings.name)
    const list = names.map((n) => `"${n}"`).join(', ')
    let name = options.destination
    if (name === undefined) {
      if (names.length !== 1) throw new EVS_ERR_QUERY_DESTINATION(`Settings define ${names.length} destinations (${list}): name the one to read with --destination`)
      name = names[0] as string
    }
    const chosen = types.destinations.find((d) => d.settings.name === name)
    if (chosen === undefined) throw new EVS_ERR_QUERY_DESTINATION(`No destination is named "${name}"; settings define ${list}`)
    const definition = chosen.definition as DestinationType
    if (definition.read === undefined) {
      throw new EVS_ERR_QUERY_DESTINATION(`Destination "${name}" is of type "${definition.type}", which cannot be read back (its plugin has no read)`)
    }
    const timeZone = types.settings.server.timeZone
    const at = now()
    const from = timeBound(options.from, timeZone, at, '--from')
    const to = timeBound(options.to, timeZone, at, '--to')
    if (from !== undefined && to !== undefined && from >= to) {
      throw new EVS_ERR_QUERY_INVALID(`--from (${new Date(from).toISOString()}) must be before --to (${new Date(to).toISOString()})`)
    }
    if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 0)) throw new EVS_ERR_QUERY_INVALID(`--limit expects a whole number, got ${options.limit}`)
    const { where, lineMustContain } = combineConditions(queryConditions(options))
    const tests = [where, options.filter].filter((t) => t !== undefined)
    const follow = options.follow === undefined || options.follow === false ? undefined : options.follow === true ? {} : options.follow
    const query: EventQuery = {
      ...(from !== undefined ? { from } : {}),
      ...(to !== undefined ? { to } : {}),
      ...(options.topics !== undefined && options.topics.length > 0 ? { topics: options.topics } : {}),
      ...(options.routingKeys !== undefined && options.routingKeys.length > 0 ? { routingKeys: options.routingKeys } : {}),
      ...(tests.length > 0 ? { where: tests.length === 1 ? tests[0] : (event: StoredEvent) => tests.every((t) => t(event)) } : {}),
      ...(lineMustContain !== undefined ? { lineMustContain } : {}),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
      ...(options.order !== undefined ? { order: options.order } : {}),
      ...(follow !== undefined ? { follow: follow.intervalMs !== undefined ? { intervalMs: follow.intervalMs } : {} } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      stats,
      ...(options.onProblem !== undefined ? { onProblem: options.onProblem } : {})
    }
    const logger = options.logger ?? fastify.log
    const byName = new Map(types.connections.map((c) => [c.name, c]))
    yield * definition.read(chosen.options, {
      name,
      baseDir,
      timeZone,
      logger,
      now,
      connection (connectionName) {
        let connection = connections.get(connectionName)
        const resolved = byName.get(connectionName)
        if (connection === undefined && resolved !== undefined) {
          const created = resolved.definition.create(resolved.options, { name: connectionName, baseDir, logger }) as Connection
          opened.push(created)
          connection = options.wrapConnection?.(created) ?? created
          connections.set(connectionName, connection)
        }
        return connection
      }
    }, query)
  } finally {
    await Promise.allSettled(opened.map(async (c) => await c.close()))
    await fastify.close()
  }
}

/**
 * The events a destination stored, as `dss-event-server query` finds them: from its settings,
 * with no server running. Iterate the result; settings, destination and option errors reject the
 * first `next()` (EVS_ERR_SETTINGS_*, EVS_ERR_QUERY_*), and so does a store that cannot be listed
 * (EVS_ERR_QUERY_STORE). Breaking out of the loop stops the reading and closes the connections.
 */
export function queryEvents (options: QueryEventsOptions): EventQueryResult {
  const stats = options.stats ?? newQueryStats()
  return {
    stats,
    [Symbol.asyncIterator]: () => run(options, stats)
  }
}
