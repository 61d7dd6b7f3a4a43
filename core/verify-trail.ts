import Fastify from 'fastify'
import type { Connection } from './connection.js'
import type { VerifyProgress, VerifyReport, VerifyRequest } from './destination.js'
import { EVS_ERR_SETTINGS_INVALID } from './errors.js'
import type { BuiltinType } from './registry.js'
import { loadSettings, type SettingsSource } from './settings.js'
import { formatProblems } from './validation.js'

export interface VerifyTrailOptions extends Omit<VerifyRequest, 'onProgress'> {
  /** Only this destination; by default every destination whose type can verify. */
  destination?: string
  env?: NodeJS.ProcessEnv
  /** Types known without a `plugins` entry (plugins/builtin.ts, handed in by the entry point). */
  builtinTypes?: readonly BuiltinType[]
  onProgress?(destination: string, progress: VerifyProgress): void
}

export interface VerifyTrailResult {
  reports: VerifyReport[]
  warnings: string[]
  /** Destinations that keep no verifiable trail, with why. */
  skipped: Array<{ destination: string, reason: string }>
}

/**
 * Environment references the auditor's shell does not define (the server's signing key, say) are
 * kept as written rather than refused: verify needs the connections, not the server's secrets.
 */
function lenientEnv (env: NodeJS.ProcessEnv, missing: Set<string>): NodeJS.ProcessEnv {
  return new Proxy(env, {
    get (target, name) {
      if (typeof name !== 'string') return undefined
      const value = target[name]
      if (value !== undefined && value !== '') return value
      missing.add(name)
      return `\${${name}}`
    }
  })
}

/**
 * Reads settings as `start` would (with verify's leniency), creates the connections, and asks every
 * destination's type to check what it stored. Nothing is written and no server runs.
 */
export async function verifyTrail (source: SettingsSource, options: VerifyTrailOptions): Promise<VerifyTrailResult> {
  const missing = new Set<string>()
  const fastify = Fastify({ logger: false })
  const connections = new Map<string, Connection>()
  try {
    // The one settings path, as start and check take it; only the purpose and the environment differ.
    const loaded = await loadSettings(fastify, {
      document: source.document,
      baseDir: source.baseDir,
      env: lenientEnv(options.env ?? process.env, missing),
      purpose: 'verify',
      ...(options.builtinTypes !== undefined ? { builtinTypes: options.builtinTypes } : {})
    })
    const unset = missing.size === 0 ? '' : `\n  (environment variables not set here: ${[...missing].join(', ')})`
    if (!loaded.ok) throw new EVS_ERR_SETTINGS_INVALID(formatProblems(loaded.problems) + unset)
    const warnings = [...missing].map((name) => `environment variable ${name} is not set: its references are kept as written`)
    const types = loaded.value
    const destinations = types.destinations.filter((d) => options.destination === undefined || d.settings.name === options.destination)
    if (destinations.length === 0) {
      throw new Error(`no destination named "${options.destination ?? ''}" in the settings (there are: ${types.destinations.map((d) => d.settings.name).join(', ')})`)
    }
    const connection = (name: string): Connection | undefined => {
      let found = connections.get(name)
      if (found === undefined) {
        const resolved = types.connections.find((c) => c.name === name)
        if (resolved === undefined) return undefined
        found = resolved.definition.create(resolved.options, { name, baseDir: source.baseDir, logger: fastify.log })
        connections.set(name, found)
      }
      return found
    }
    const names = new Set(types.destinations.map((d) => d.settings.name))
    const reports: VerifyReport[] = []
    const skipped: VerifyTrailResult['skipped'] = []
    for (const { settings, definition, options: destinationOptions } of destinations) {
      const name = settings.name
      if (definition.verify === undefined) {
        skipped.push({ destination: name, reason: `destinations of type "${definition.type}" keep no verifiable trail` })
        continue
      }
      const { destination: _d, env: _e, builtinTypes: _b, onProgress, ...request } = options
      const report = await definition.verify(destinationOptions, { name, baseDir: source.baseDir, logger: fastify.log, connection, destinations: names }, {
        ...request,
        ...(onProgress !== undefined ? { onProgress: (p: VerifyProgress) => onProgress(name, p) } : {})
      })
      if (report === undefined) skipped.push({ destination: name, reason: 'its integrity trail is not enabled' })
      else reports.push(report)
    }
    return { reports, warnings, skipped }
  } finally {
    await Promise.allSettled([...connections.values()].map(async (c) => await c.close()))
    await fastify.close()
  }
}
