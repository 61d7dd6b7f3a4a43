import { createRequire } from 'node:module'
import { isAbsolute, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { ConnectionType } from './connection.js'
import type { DestinationType } from './destination.js'
import { EVS_ERR_PLUGIN_LOAD, EVS_ERR_PLUGIN_TYPE_DUPLICATE } from './errors.js'

export interface TypeRegistry {
  registerConnectionType(definition: ConnectionType<any>): void
  registerDestinationType(definition: DestinationType<any>): void
  readonly connectionTypes: ReadonlyMap<string, ConnectionType<any>>
  readonly destinationTypes: ReadonlyMap<string, DestinationType<any>>
}

declare module 'fastify' {
  interface FastifyInstance {
    eventServerTypes: TypeRegistry
  }
}

type PluginModule = { default?: unknown }

// Built-in types are imported only when settings use them, so an unused cloud SDK never loads.
export const builtinTypes: Readonly<Record<string, () => Promise<PluginModule>>> = {
  filesystem: async () => await import('../plugins/filesystem/index.js'),
  files: async () => await import('../plugins/files/index.js'),
  s3: async () => await import('../plugins/s3/index.js'),
  'azure-blob': async () => await import('../plugins/azure-blob/index.js'),
  gcs: async () => await import('../plugins/gcs/index.js')
}

function createTypeRegistry (): TypeRegistry {
  const connectionTypes = new Map<string, ConnectionType<any>>()
  const destinationTypes = new Map<string, DestinationType<any>>()
  return {
    connectionTypes,
    destinationTypes,
    registerConnectionType (definition) {
      if (connectionTypes.has(definition.type)) throw new EVS_ERR_PLUGIN_TYPE_DUPLICATE('connection', definition.type)
      connectionTypes.set(definition.type, definition)
    },
    registerDestinationType (definition) {
      if (destinationTypes.has(definition.type)) throw new EVS_ERR_PLUGIN_TYPE_DUPLICATE('destination', definition.type)
      destinationTypes.set(definition.type, definition)
    }
  }
}

async function eventServerTypes (fastify: FastifyInstance): Promise<void> {
  fastify.decorate('eventServerTypes', createTypeRegistry())
}

export const typeRegistryPlugin = fp(eventServerTypes, { fastify: '5.x', name: 'dss-event-server-types' })

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

// Cloud SDKs are optional dependencies: an admin may install only the ones they use.
const SDK_PACKAGES: Readonly<Record<string, string>> = {
  s3: '@aws-sdk/client-s3 @aws-sdk/lib-storage',
  'azure-blob': '@azure/storage-blob @azure/identity',
  gcs: '@google-cloud/storage'
}

export async function importBuiltin (type: string): Promise<FastifyPluginAsync | undefined> {
  const load = builtinTypes[type]
  if (load === undefined) return undefined
  let module: PluginModule
  try {
    module = await load()
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && SDK_PACKAGES[type] !== undefined
    throw new EVS_ERR_PLUGIN_LOAD(type, missing
      ? `${(err as Error).message.split('\n')[0]}; connections of type "${type}" need: npm install ${SDK_PACKAGES[type]}`
      : (err as Error).message)
  }
  return asPlugin(type, module)
}
