import { createRequire } from 'node:module'
import { isAbsolute, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { TSchema } from 'typebox'
import type { ConnectionType } from './connection.js'
import type { DestinationType } from './destination.js'
import { EVS_ERR_PLUGIN_LOAD, EVS_ERR_PLUGIN_TYPE_DUPLICATE } from './errors.js'

export interface TypeRegistry {
  /** Adds a connection type; its options are typed by its schema. */
  registerConnectionType<S extends TSchema>(definition: ConnectionType<S>): void
  /** Adds a destination type; its options are typed by its schema. */
  registerDestinationType<S extends TSchema>(definition: DestinationType<S>): void
  readonly connectionTypes: ReadonlyMap<string, ConnectionType<any>>
  readonly destinationTypes: ReadonlyMap<string, DestinationType<any>>
}

declare module 'fastify' {
  interface FastifyInstance {
    eventServerTypes: TypeRegistry
  }
}

/** What a plugin module exports: a Fastify plugin function, as its default export. */
export interface PluginModule { default?: unknown }

/**
 * A type the server knows by name without a `plugins` entry: its plugin module is imported only
 * when settings use the type, so an unused backend (and its SDK) never loads. The entry point
 * (command line, package entry) hands the table to the server; the core names no plugin.
 */
export interface BuiltinType {
  readonly type: string
  readonly kind: 'connection' | 'destination'
  load(): Promise<PluginModule>
  /** npm packages the plugin needs that an install may omit (optional dependencies). */
  readonly packages?: readonly string[]
}

export const TYPE_REGISTRY_PLUGIN = 'dss-event-server-types'

function createTypeRegistry (): TypeRegistry {
  const connectionTypes = new Map<string, ConnectionType<any>>()
  const destinationTypes = new Map<string, DestinationType<any>>()
  return {
    connectionTypes,
    destinationTypes,
    registerConnectionType (definition) {
      if (connectionTypes.has(definition.type)) throw new EVS_ERR_PLUGIN_TYPE_DUPLICATE('connection', definition.type)
      connectionTypes.set(definition.type, definition as ConnectionType<any>)
    },
    registerDestinationType (definition) {
      if (destinationTypes.has(definition.type)) throw new EVS_ERR_PLUGIN_TYPE_DUPLICATE('destination', definition.type)
      destinationTypes.set(definition.type, definition as DestinationType<any>)
    }
  }
}

async function eventServerTypes (fastify: FastifyInstance): Promise<void> {
  fastify.decorate('eventServerTypes', createTypeRegistry())
}

export const typeRegistryPlugin = fp(eventServerTypes, { fastify: '5.x', name: TYPE_REGISTRY_PLUGIN })

function asPlugin (spec: string, module: PluginModule): FastifyPluginAsync {
  const plugin = module.default ?? module
  if (typeof plugin !== 'function') {
    throw new EVS_ERR_PLUGIN_LOAD(spec, 'its default export is not a Fastify plugin function')
  }
  return plugin as FastifyPluginAsync
}

/**
 * Loads a third-party plugin named in settings: an npm package name, or a path (file or package
 * folder) relative to the settings file's folder. Resolution starts from that folder, then from
 * this server's own install, so a plugin installed beside either is found.
 */
export async function importPlugin (spec: string, baseDir: string): Promise<FastifyPluginAsync> {
  const target = spec.startsWith('.') || isAbsolute(spec) ? resolve(baseDir, spec) : spec
  let resolved: string | undefined
  let lastError: unknown
  for (const from of [join(baseDir, 'settings.js'), import.meta.filename]) {
    try {
      resolved = createRequire(from).resolve(target)
      break
    } catch (err) {
      lastError = err
    }
  }
  if (resolved === undefined) {
    throw new EVS_ERR_PLUGIN_LOAD(spec, `not found from ${baseDir} (${(lastError as Error).message.split('\n')[0]})`)
  }
  let module: PluginModule
  try {
    module = await import(pathToFileURL(resolved).href) as PluginModule
  } catch (err) {
    throw new EVS_ERR_PLUGIN_LOAD(spec, (err as Error).message)
  }
  return asPlugin(spec, module)
}

async function importBuiltin (builtin: BuiltinType): Promise<FastifyPluginAsync> {
  let module: PluginModule
  try {
    module = await builtin.load()
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && builtin.packages !== undefined
    throw new EVS_ERR_PLUGIN_LOAD(builtin.type, missing
      ? `${(err as Error).message.split('\n')[0]}; ${builtin.kind}s of type "${builtin.type}" need: npm install ${builtin.packages?.join(' ')}`
      : (err as Error).message)
  }
  return asPlugin(builtin.type, module)
}

/**
 * Registers the type registry, the plugins settings name, then the built-in plugins of every type
 * settings use and no plugin provided. Nothing else is imported: a backend's SDK loads only when a
 * connection uses it.
 */
export async function registerTypes (app: FastifyInstance, plugins: readonly string[], used: Iterable<string>, baseDir: string, builtins: readonly BuiltinType[]): Promise<void> {
  await app.register(typeRegistryPlugin)
  for (const spec of plugins) await app.register(await importPlugin(spec, baseDir))
  const registry = app.eventServerTypes
  for (const type of new Set(used)) {
    if (registry.connectionTypes.has(type) || registry.destinationTypes.has(type)) continue
    const builtin = builtins.find((b) => b.type === type)
    if (builtin !== undefined) await app.register(await importBuiltin(builtin))
  }
}
