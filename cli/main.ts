import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { checkCommand } from './check-command.js'
import { QUERY_USAGE, queryCommand } from './query-command.js'
import { sendCommand } from './send-command.js'
import { startCommand } from './start-command.js'
import { verifyCommand } from './verify-command.js'

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

/**
 * Runs the command line over the package entry (index.ts: the core with the built-in types);
 * resolves with the exit code (`start` keeps the process running).
 */
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
      case 'start': return await startCommand(values.config, values.host, values.port, values.pretty === true)
      case 'check': return await checkCommand(values.config, values.connections === true)
      case 'send': return await sendCommand(values)
      case 'verify': return await verifyCommand(values)
      case 'query': return await queryCommand(values)
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
