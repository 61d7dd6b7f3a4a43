import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { buildServer, checkSettings } from './server.js'
import { readSettingsFile, type SettingsSource } from './settings.js'
import { formatProblems } from './validation.js'

const USAGE = `Usage: dss-event-server <command> [options]

Commands:
  start    Run the server (the default command)
  check    Validate a settings file and print every problem; exit code 1 if any.
           With --connections, also write and delete a probe object through every
           connection and report, per connection, whether that worked

Options:
  -c, --config FILE   Settings file, JSON or YAML (default: built-in settings, see README)
      --host HOST     Listen address; overrides server.host
      --port PORT     Listen port; overrides server.port
      --connections   (check) Probe every connection
  -h, --help          Show this help
  -v, --version       Show the version
`

function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

async function loadSource (config: string | undefined): Promise<SettingsSource> {
  if (config === undefined) return { document: {}, baseDir: process.cwd(), origin: 'built-in defaults' }
  return await readSettingsFile(config)
}

function withOverrides (document: unknown, host: string | undefined, port: string | undefined): unknown {
  if (host === undefined && port === undefined) return document
  const doc = { ...(document as Record<string, unknown>) }
  const server = { ...(typeof doc.server === 'object' && doc.server !== null ? doc.server as Record<string, unknown> : {}) }
  if (host !== undefined) server.host = host
  if (port !== undefined) server.port = port
  doc.server = server
  return doc
}

function installSignalHandlers (app: FastifyInstance, timeoutS: number): void {
  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting without waiting')
      process.exit(1)
    }
    stopping = true
    app.log.info({ signal }, 'stopping: no new connections; finishing requests, flushing and closing files')
    const timer = setTimeout(() => {
      app.log.error({ timeoutS }, 'shutdown took longer than server.shutdownTimeoutS; exiting')
      process.exit(1)
    }, timeoutS * 1000)
    app.close().then(() => {
      clearTimeout(timer)
      app.log.info('stopped cleanly')
      process.exit(0)
    }, (err: unknown) => {
      app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

async function start (config: string | undefined, host: string | undefined, port: string | undefined): Promise<number> {
  const source = await loadSource(config)
  const app = await buildServer({ document: withOverrides(source.document, host, port), baseDir: source.baseDir })
  const { server, security } = app.eventServer.settings
  installSignalHandlers(app, server.shutdownTimeoutS)
  await app.listen({ host: server.host, port: server.port })
  const destinations = [...app.eventServer.destinations.keys()]
  app.log.info({ settings: source.origin, instanceId: app.eventServer.instanceId, destinations }, 'dss-event-server is ready')
  if (!security.requireAuthenticationForEvents && server.host !== '127.0.0.1' && server.host !== 'localhost' && server.host !== '::1') {
    app.log.warn('events are accepted without authentication on a non-loopback address: set security.requireAuthenticationForEvents')
  }
  return 0
}

async function check (config: string | undefined, probeConnections: boolean): Promise<number> {
  const source = await loadSource(config)
  const { problems, warnings, probes } = await checkSettings(source.document, source.baseDir, process.env, { probeConnections })
  for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`)
  if (problems.length > 0) {
    process.stderr.write(`${source.origin}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${formatProblems(problems)}\n`)
    return 1
  }
  process.stdout.write(`${source.origin}: settings are valid\n`)
  if (probes === undefined) return 0
  for (const p of probes) {
    process.stdout.write(p.ok
      ? `connection ${p.name} (${p.type}): ok, a probe object was written and deleted\n`
      : `connection ${p.name} (${p.type}): FAILED: ${p.error ?? 'unknown error'}\n`)
  }
  return probes.every((p) => p.ok) ? 0 : 1
}

/** Runs the command line; resolves with the exit code (`start` keeps the process running). */
export async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        host: { type: 'string' },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        connections: { type: 'boolean' }
      }
    })
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    process.stdout.write(USAGE)
    return 0
  }
  if (values.version === true) {
    process.stdout.write(`${version()}\n`)
    return 0
  }
  const command = positionals[0] ?? 'start'
  try {
    switch (command) {
      case 'start': return await start(values.config, values.host, values.port)
      case 'check': return await check(values.config, values.connections === true)
      default:
        process.stderr.write(`Unknown command "${command}"\n\n${USAGE}`)
        return 2
    }
  } catch (err) {
    const e = err as Error & { code?: string }
    process.stderr.write(`${e.code !== undefined ? `${e.code}: ` : ''}${e.message}\n`)
    return 1
  }
}
