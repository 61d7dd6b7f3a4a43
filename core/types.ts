import type { FastifyInstance } from 'fastify'
import type { ConnectionType } from './connection.js'
import type { DestinationType } from './destination.js'
import { registerTypes as registerPluginTypes, type BuiltinType, type TypeRegistry } from './registry.js'
import { DESTINATION_COMMON_KEYS, type DestinationCommonSettings, type Settings } from './schemas/settings.js'
import { validate, type SettingsProblem } from './validation.js'

export interface ResolvedConnection {
  readonly name: string
  readonly definition: ConnectionType<any>
  readonly options: unknown
}

export interface ResolvedDestination {
  readonly settings: DestinationCommonSettings
  readonly definition: DestinationType<any>
  readonly options: unknown
}

export type ResolvedTypes =
  | { ok: true, connections: ResolvedConnection[], destinations: ResolvedDestination[] }
  | { ok: false, problems: SettingsProblem[] }

/** Loads the plugins settings name and the built-in plugins of the types settings use. */
export async function registerTypes (app: FastifyInstance, settings: Settings, baseDir: string, builtins: readonly BuiltinType[]): Promise<void> {
  const used = [...Object.values(settings.connections).map((c) => c.type), ...settings.destinations.map((d) => d.type)]
  await registerPluginTypes(app, settings.plugins, used, baseDir, builtins)
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
export function resolveTypes (registry: TypeRegistry, settings: Settings, baseDir: string, logger: FastifyInstance['log'], builtins: readonly BuiltinType[]): ResolvedTypes {
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

  return problems.length > 0 ? { ok: false, problems } : { ok: true, connections, destinations }
}
