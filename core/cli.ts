import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { EVS_ERR_CLI_ARGUMENT } from './errors.js'
import type { BuiltinType } from './registry.js'
import { checkSettings } from './check.js'
import { buildServer } from './server.js'
import { readSettingsFile, type SettingsSource } from './settings.js'
import { formatProblems } from './validation.js'
import { parseDuration, send, type SenderProgress, type SenderSummary } from './sender.js'
import type { VerifyProgress, VerifyReport } from './destination.js'
import { verifyTrail } from './verify-trail.js'
import { QUERY_USAGE, queryCommand } from './query-command.js'

const USAGE = `Usage: dss-event-server <command> [options]

Commands:
  start    Run the server (the default command). SIGHUP reloads the settings file;
           SIGTERM or SIGINT stop it after flushing every file
  check    Validate a settings file and print every problem; exit code 1 if any.
           With --connections, also write and delete a probe object through every
           connection and report, per connection, whether that worked

  verify   Check the tamper-evident trail of destinations with integrity on, through their
           connections, with no server running; exit code 0 only if everything checks:
           verify --config FILE [--destination NAME] [--from T] [--to T]
                  [--public-key FILE] [--heads FILE] [--json]
           --from/--to: ISO-8601 times (records written then); --public-key: PEM files,
           repeat it for records signed with earlier keys; --heads: the server's log
           lines holding "integrity head" entries (e.g. exported from a SIEM)

  send     Send synthetic DSS audit events to a server and report what it acknowledged:
           send --url URL [--key K] [--topic T] [--routing-key R] [--rate N]
                [--count N | --duration 30s] [--batch N] [--concurrency N] [--insecure]

${QUERY_USAGE}
Options:
  -c, --config FILE   Settings file, JSON or YAML (default: built-in settings, see README)
      --host HOST     Listen address; overrides server.host
      --port PORT     Listen port; overrides server.port
      --connections   (check) Probe every connection
      --pretty        (start) Human-readable logs instead of JSON lines
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
  process.on('SIGHUP', () => {
    app.log.info('SIGHUP: reloading settings')
    // A rejected reload is logged with its reasons and keeps the running settings.
    app.eventServer.reload().catch(() => {})
  })
}

async function start (config: string | undefined, host: string | undefined, port: string | undefined, pretty: boolean, builtinTypes: readonly BuiltinType[]): Promise<number> {
  const app = await buildServer({
    builtinTypes,
    ...(config !== undefined ? { settingsFile: config } : { document: {}, baseDir: process.cwd() }),
    overrides: { ...(host !== undefined ? { host } : {}), ...(port !== undefined ? { port } : {}) },
    pretty
  })
  const { server, security } = app.eventServer.settings
  installSignalHandlers(app, server.shutdownTimeoutS)
  await app.listen({ host: server.host, port: server.port })
  const destinations = [...app.eventServer.destinations.keys()]
  app.log.info({ settings: config ?? 'built-in defaults', instanceId: app.eventServer.instanceId, destinations }, 'dss-event-server is ready')
  if (!security.requireAuthenticationForEvents && server.host !== '127.0.0.1' && server.host !== 'localhost' && server.host !== '::1') {
    app.log.warn('events are accepted without authentication on a non-loopback address: set security.requireAuthenticationForEvents')
  }
  return 0
}

function bar (p: SenderProgress, total: number | undefined, durationS: number | undefined): string {
  const fraction = total !== undefined ? p.eventsSent / total : durationS !== undefined ? p.elapsedS / durationS : 0
  const width = 24
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)))
  const rate = p.elapsedS > 0 ? Math.round(p.eventsAcknowledged / p.elapsedS) : 0
  const rejected = Object.values(p.rejectedByStatus).reduce((a, b) => a + b, 0)
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.round(fraction * 100)}%  ${p.eventsSent} sent  ${p.eventsAcknowledged} acked  ${rate} ev/s  ${rejected} rejected  ${p.errors} errors`
}

function report (s: SenderSummary): string {
  const rejected = Object.entries(s.rejectedByStatus)
  return [
    `sent          ${s.eventsSent} events in ${s.requestsSent} requests over ${s.elapsedS.toFixed(2)} s`,
    `acknowledged  ${s.eventsAcknowledged} events (${Math.round(s.eventsPerSecond)} events/s)`,
    `rejected      ${rejected.length === 0 ? 'none' : rejected.map(([status, n]) => `${n} requests with ${status}`).join(', ')}`,
    `errors        ${s.errors}${s.lastError !== null ? ` (last: ${s.lastError})` : ''}`,
    `latency       p50 ${s.latencyMs.p50.toFixed(1)} ms, p99 ${s.latencyMs.p99.toFixed(1)} ms, max ${s.latencyMs.max.toFixed(1)} ms`
  ].join('\n') + '\n'
}

function positive (name: string, text: string | undefined, fallback: number, allowZero = false): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) throw new EVS_ERR_CLI_ARGUMENT(`--${name} expects a ${allowZero ? 'non-negative' : 'positive'} number, got "${text}"`)
  return value
}

const lastOf = (value: string | boolean | string[] | undefined): string => String(Array.isArray(value) ? value[value.length - 1] : value)

async function sendCommand (values: Record<string, string | boolean | string[] | undefined>): Promise<number> {
  const url = values.url as string | undefined
  if (url === undefined) throw new EVS_ERR_CLI_ARGUMENT('send needs --url, e.g. --url http://localhost:11004')
  const durationS = values.duration === undefined ? undefined : parseDuration(values.duration as string)
  if (values.duration !== undefined && durationS === undefined) throw new EVS_ERR_CLI_ARGUMENT(`--duration expects e.g. 30s, 2m or 500ms, got "${String(values.duration)}"`)
  const count = values.count === undefined ? undefined : positive('count', values.count as string, 0)
  const options = {
    url,
    rate: positive('rate', values.rate as string | undefined, 0, true),
    batch: positive('batch', values.batch as string | undefined, 1),
    concurrency: positive('concurrency', values.concurrency as string | undefined, 8),
    ...(count !== undefined ? { count } : {}),
    ...(durationS !== undefined ? { durationS } : {}),
    ...(values.key !== undefined ? { key: values.key as string } : {}),
    ...(values.topic !== undefined ? { topic: lastOf(values.topic) } : {}),
    ...(values['routing-key'] !== undefined ? { routingKey: lastOf(values['routing-key']) } : {}),
    insecure: values.insecure === true
  }
  const tty = process.stderr.isTTY
  const total = count ?? (durationS === undefined ? 1000 : undefined)
  const summary = await send(options, tty ? (p) => process.stderr.write(`\r${bar(p, total, durationS)}`) : undefined)
  if (tty) process.stderr.write('\n')
  process.stdout.write(report(summary))
  return summary.eventsAcknowledged === summary.eventsSent ? 0 : 1
}

async function check (config: string | undefined, probeConnections: boolean, builtinTypes: readonly BuiltinType[]): Promise<number> {
  const source = await loadSource(config)
  const { problems, warnings, probes } = await checkSettings(source.document, source.baseDir, process.env, { probeConnections, builtinTypes })
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

function parseTime (name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const ms = Date.parse(text)
  if (Number.isNaN(ms)) throw new EVS_ERR_CLI_ARGUMENT(`--${name} expects an ISO-8601 date or time such as 2026-11-26 or 2026-11-26T08:00:00Z, got "${text}"`)
  return ms
}

/** Heads from log lines: the server logs each as `{"integrityHead":{…},"msg":"integrity head"}`. */
function knownHeads (text: string): Array<{ destination: string, instanceId: string, seq: number, hash: string }> {
  const heads = []
  for (const line of text.split('\n')) {
    const start = line.indexOf('{')
    if (start === -1) continue
    let parsed: unknown
    try {
      parsed = JSON.parse(line.slice(start))
    } catch {
      continue
    }
    const head = (parsed as { integrityHead?: unknown }).integrityHead ?? parsed
    const h = head as { destination?: unknown, instanceId?: unknown, seq?: unknown, hash?: unknown }
    if (typeof h.destination === 'string' && typeof h.instanceId === 'string' && typeof h.seq === 'number' && typeof h.hash === 'string') {
      heads.push({ destination: h.destination, instanceId: h.instanceId, seq: h.seq, hash: h.hash })
    }
  }
  return heads
}

function megabytes (bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

function reportText (report: VerifyReport): string {
  const { summary } = report
  const lines = [`destination ${report.destination}: ${report.problems.length === 0 ? 'OK' : `FAILED, ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`}`]
  for (const p of report.problems) lines.push(`  ${p.kind.padEnd(17)} ${p.key}\n  ${' '.repeat(17)} ${p.message}`)
  for (const o of report.open) lines.push(`  ${'open'.padEnd(17)} ${o.key}: ${o.message}`)
  lines.push(`  ${summary.files} files, ${megabytes(summary.bytes)}, ${summary.events} events verified` +
    `${summary.from !== null ? `, received ${summary.from} to ${summary.to ?? '?'}` : ''}; ${summary.records} records (${summary.heads} heads) from ${summary.instances} instance${summary.instances === 1 ? '' : 's'}; ` +
    (summary.signed ? 'signatures checked' : 'signatures not checked'))
  for (const note of summary.notes) lines.push(`  note: ${note}`)
  return lines.join('\n') + '\n'
}

async function verifyCommand (values: Record<string, string | boolean | string[] | undefined>, builtinTypes: readonly BuiltinType[]): Promise<number> {
  const config = values.config as string | undefined
  if (config === undefined) throw new EVS_ERR_CLI_ARGUMENT('verify needs --config FILE: the settings of the server whose trail to check')
  const source = await readSettingsFile(config)
  const from = parseTime('from', values.from as string | undefined)
  const to = parseTime('to', values.to as string | undefined)
  const publicKeys = ((values['public-key'] ?? []) as string[]).map((file) => readFileSync(file, 'utf8'))
  const heads = values.heads === undefined ? undefined : knownHeads(readFileSync(values.heads as string, 'utf8'))
  const json = values.json === true
  const tty = process.stderr.isTTY && !json
  let lastDraw = 0
  const draw = (destination: string, p: VerifyProgress): void => {
    const now = Date.now()
    if (now - lastDraw < 100 && p.done !== p.total) return
    lastDraw = now
    const count = p.total > 0 ? ` ${p.done}/${p.total}` : ''
    process.stderr.write(`\r\x1b[K${destination}: ${p.phase}${count}${p.bytes > 0 ? `, ${megabytes(p.bytes)}` : ''}`)
  }
  const result = await verifyTrail(source, {
    ...(values.destination !== undefined ? { destination: values.destination as string } : {}),
    ...(from !== undefined ? { from } : {}),
    ...(to !== undefined ? { to } : {}),
    ...(publicKeys.length > 0 ? { publicKeys } : {}),
    ...(heads !== undefined ? { knownHeads: heads } : {}),
    now: Date.now(),
    builtinTypes,
    ...(tty ? { onProgress: draw } : {})
  })
  if (tty) process.stderr.write('\r\x1b[K')
  const ok = result.reports.length > 0 && result.reports.every((r) => r.problems.length === 0)
  if (json) {
    process.stdout.write(JSON.stringify({ ok, destinations: result.reports, skipped: result.skipped, warnings: result.warnings }, null, 2) + '\n')
  } else {
    for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`)
    for (const s of result.skipped) process.stdout.write(`destination ${s.destination}: skipped, ${s.reason}\n`)
    for (const report of result.reports) process.stdout.write(reportText(report))
    if (result.reports.length === 0) process.stdout.write('no destination with an integrity trail to verify\n')
  }
  return ok ? 0 : 1
}

/**
 * Runs the command line; resolves with the exit code (`start` keeps the process running). The
 * entry point (bin/dss-event-server.js) passes the built-in types: the core names no plugin.
 */
export async function main (argv: string[], { builtinTypes = [] }: { builtinTypes?: readonly BuiltinType[] } = {}): Promise<number> {
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
        connections: { type: 'boolean' },
        pretty: { type: 'boolean' },
        url: { type: 'string' },
        key: { type: 'string' },
        topic: { type: 'string', multiple: true },
        'routing-key': { type: 'string', multiple: true },
        rate: { type: 'string' },
        count: { type: 'string' },
        duration: { type: 'string' },
        batch: { type: 'string' },
        concurrency: { type: 'string' },
        insecure: { type: 'boolean' },
        from: { type: 'string' },
        to: { type: 'string' },
        'public-key': { type: 'string', multiple: true },
        heads: { type: 'string' },
        json: { type: 'boolean' },
        destination: { type: 'string', short: 'd' },
        user: { type: 'string', multiple: true },
        'msg-type': { type: 'string', multiple: true },
        address: { type: 'string', multiple: true },
        where: { type: 'string', short: 'w', multiple: true },
        format: { type: 'string' },
        fields: { type: 'string' },
        limit: { type: 'string' },
        order: { type: 'string' },
        'count-by': { type: 'string' },
        follow: { type: 'boolean', short: 'f' },
        interval: { type: 'string' }
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
      case 'start': return await start(values.config, values.host, values.port, values.pretty === true, builtinTypes)
      case 'check': return await check(values.config, values.connections === true, builtinTypes)
      case 'send': return await sendCommand(values)
      case 'verify': return await verifyCommand(values, builtinTypes)
      case 'query': return await queryCommand(values, { builtinTypes })
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
