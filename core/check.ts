import Fastify from 'fastify'
import type { Connection } from './connection.js'
import { EVS_ERR_PROBE_TIMEOUT } from './errors.js'
import { loadSettings, type SettingsInput } from './settings.js'
import type { SettingsProblem } from './validation.js'

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

export interface CheckOptions {
  /** Also write and delete a probe object through every connection. */
  probeConnections?: boolean
  builtinTypes?: SettingsInput['builtinTypes']
}

const PROBE_TIMEOUT_MS = 30_000

async function probe (connection: Connection): Promise<ConnectionProbe> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      connection.check(),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new EVS_ERR_PROBE_TIMEOUT(connection.name, PROBE_TIMEOUT_MS / 1000)), PROBE_TIMEOUT_MS) })
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
export async function checkSettings (document: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env, options: CheckOptions = {}): Promise<CheckResult> {
  const fastify = Fastify({ logger: false })
  try {
    const result = await loadSettings(fastify, { document, baseDir, env, ...(options.builtinTypes !== undefined ? { builtinTypes: options.builtinTypes } : {}) })
    if (!result.ok) return { problems: result.problems, warnings: [...result.warnings] }
    const { connections, warnings } = result.value
    if (options.probeConnections !== true) return { problems: [], warnings: [...warnings] }
    const probes = await Promise.all(connections.map(async ({ name, definition, options: connectionOptions }) =>
      await probe(definition.create(connectionOptions, { name, baseDir, logger: fastify.log }))))
    return { problems: [], warnings: [...warnings], probes }
  } finally {
    await fastify.close()
  }
}
