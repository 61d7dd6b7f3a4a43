import type { FastifyInstance } from 'fastify'
import type { ConnectionType } from './connection.js'
import type { DestinationType } from './destination.js'
import { builtinTypes, importBuiltin, importPlugin, typeRegistryPlugin, type TypeRegistry } from './registry.js'
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

/**
 * Registers the plugins settings name, then the built-in plugins of every type settings use and no
 * plugin provided. Nothing else is imported: a backend's SDK loads only when a connection uses it.
 */
export async function registerTypes (app: FastifyInstance, settings: Settings, baseDir: string): Promise<void> {
  await app.register(typeRegistryPlugin)
  for (const spec of settings.plugins) await app.register(await importPlugin(spec, baseDir))
  const registry = app.eventServerTypes
  const used = new Set([
    ...Object.values(settings.connections).map((c) => c.type),
    ...settings.destinations.map((d) => d.type)
  ])
  for (const type of used) {
    if (registry.connectionTypes.has(type) || registry.destinationTypes.has(type)) continue
    const plugin = await importBuiltin(type)
    if (plugin !== undefined) await app.register(plugin)
  }
}

function known (kind: string, names: Iterable<string>): string {
  const list = [...new Set(names)].sort().map((n) => JSON.stringify(n)).join(', ')
  return `expected a ${kind} type: one of ${list}, or a type added by a plugin listed in "plugins"`
}

function without (block: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(block)) if (!keys.includes(key)) out[key] = value
  return out
}

/** Validates each connection's and destination's own options against its type's schema. */
export function resolveTypes (registry: TypeRegistry, settings: Settings, baseDir: string, logger: FastifyInstance['log'], purpose: 'serve' | 'verify' = 'serve'): ResolvedTypes {
  const problems: SettingsProblem[] = []
  const connections: ResolvedConnection[] = []
  const destinations: ResolvedDestination[] = []
  const builtinNames = Object.keys(builtinTypes)

  for (const [name, block] of Object.entries(settings.connections)) {
    const path = `/connections/${name}`
    const definition = registry.connectionTypes.get(block.type)
    if (definition === undefined) {
      problems.push({ path: `${path}/type`, message: `${known('connection', [...builtinNames.filter((n) => n !== 'files'), ...registry.connectionTypes.keys()])}, got ${JSON.stringify(block.type)}` })
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
      problems.push({ path: `${path}/type`, message: `${known('destination', ['files', ...registry.destinationTypes.keys()])}, got ${JSON.stringify(block.type)}` })
      return
    }
    const result = validate(definition.schema, without(block, DESTINATION_COMMON_KEYS), path)
    if (!result.ok) {
      problems.push(...result.problems)
      return
    }
    problems.push(...(definition.check?.(result.value, { name: block.name, connections: connectionTypes, baseDir, purpose }) ?? []).map((p) => ({ ...p, path: path + p.path })))
    destinations.push({ settings: block, definition, options: result.value })
  })

  return problems.length > 0 ? { ok: false, problems } : { ok: true, connections, destinations }
}
