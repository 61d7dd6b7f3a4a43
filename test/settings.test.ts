import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { buildServer, checkSettings } from '../index.js'
import { parseCoreSettings } from '../core/settings.js'
import { fsSettings, listFiles, readEvents, start, tempDir } from './helpers.js'
import { spawnServer } from './child-server.js'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'dss-event-server.js')

async function cli (args: string[], cwd: string): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('settings validation', () => {
  it('reports every problem with its path and what was expected', async () => {
    const dir = await tempDir()
    const { problems } = await checkSettings({
      server: { port: 'eighty', timeZone: 'Mars/Olympus', colour: 'blue' },
      security: { requireAuthenticationForEvents: true },
      connections: { local: { type: 'filesystem' }, cloud: { type: 'floppy' } },
      destinations: [
        { name: 'a', connection: 'local', partitioningPeriod: 'WEEK' },
        { name: 'b', connection: 'nowhere', pathFormat: '%{topic}/%Q' }
      ]
    }, dir)
    const byPath = Object.fromEntries(problems.map((p) => [p.path, p.message]))
    expect(byPath['/server/port']).toMatch(/integer/i)
    expect(byPath['/server/colour']).toMatch(/unexpected property/i)
    expect(Object.keys(byPath)).toContain('/server/port')
    // Core problems are reported first; type-specific ones need a valid core.
    const second = await checkSettings({
      security: { requireAuthenticationForEvents: true, eventsAuthenticationKeys: [] },
      server: { timeZone: 'Mars/Olympus' },
      connections: { local: { type: 'filesystem' }, cloud: { type: 'floppy' } },
      destinations: [
        { name: 'a', connection: 'local', partitioningPeriod: 'WEEK', requiredAuthKey: 'secret-value' },
        { name: 'a', connection: 'nowhere', pathFormat: '%{topic}/%Q' }
      ]
    }, dir)
    const core = Object.fromEntries(second.problems.map((p) => [p.path, p.message]))
    expect(core).toEqual({
      '/security/eventsAuthenticationKeys': 'expected at least one key when requireAuthenticationForEvents is true',
      '/server/timeZone': 'expected an IANA time zone such as "UTC" or "Europe/Paris", got "Mars/Olympus"',
      '/destinations/1/name': 'expected a unique name, "a" is used twice',
      '/destinations/0/requiredAuthKey': 'expected one of the keys in security.eventsAuthenticationKeys'
    })
    expect(JSON.stringify(second.problems)).not.toContain('secret-value')
    const third = await checkSettings({
      connections: { local: { type: 'filesystem' }, cloud: { type: 'floppy' } },
      destinations: [
        { name: 'a', connection: 'local', partitioningPeriod: 'WEEK' },
        { name: 'b', connection: 'nowhere', pathFormat: '%{topic}/%Q', path: '../up' }
      ]
    }, dir)
    const typed = Object.fromEntries(third.problems.map((p) => [p.path, p.message]))
    expect(typed['/connections/local/root']).toMatch(/required property/i)
    expect(typed['/connections/cloud/type']).toMatch(/expected a connection type: one of .*"filesystem".*got "floppy"/)
    expect(typed['/destinations/0/partitioningPeriod']).toBe('expected one of "MONTH", "DAY", "HOUR", got "WEEK"')
    expect(typed['/destinations/1/connection']).toMatch(/expected the name of a connection defined in "connections" \("local", "cloud"\), got "nowhere"/)
    expect(typed['/destinations/1/pathFormat']).toMatch(/unknown token at "%Q"/)
    expect(typed['/destinations/1/path']).toMatch(/without "\." or "\.\." segments/)
  })

  it('reports every problem, however many', async () => {
    const dir = await tempDir()
    const keys = Array.from({ length: 12 }, (_, i) => `extra${i}`)
    const { problems } = await checkSettings({ server: { ...Object.fromEntries(keys.map((k) => [k, 1])), port: -1, logLevel: 'loud' } }, dir)
    expect(Object.fromEntries(problems.map((p) => [p.path, p.message]))).toEqual({
      ...Object.fromEntries(keys.map((k) => [`/server/${k}`, 'unexpected property, got 1'])),
      '/server/port': 'expected an integer greater than or equal to 0, got -1',
      '/server/logLevel': 'expected one of "fatal", "error", "warn", "info", "debug", "trace", "silent", got "loud"'
    })
  })

  it('refuses to start half-configured: buildServer throws EVS_ERR_SETTINGS_INVALID', async () => {
    const dir = await tempDir()
    await expect(buildServer({ document: fsSettings({ compression: 'zip' }), baseDir: dir, logger: false }))
      .rejects.toMatchObject({ code: 'EVS_ERR_SETTINGS_INVALID', message: expect.stringContaining('/destinations/0/compression: expected one of "none", "gzip", got "zip"') })
    expect(await listFiles(dir)).toEqual([])
  })

  it('interpolates ${ENV} and ${ENV:-default}, converting numbers and booleans; a missing variable is a problem', () => {
    const ok = parseCoreSettings({ server: { port: '${PORT}', host: '${HOST:-127.0.0.1}' }, security: { requireAuthenticationForEvents: '${AUTH}', eventsAuthenticationKeys: [{ key: 'k$${literal}' }] } },
      { PORT: '9999', AUTH: 'true' })
    expect(ok.ok).toBe(true)
    if (ok.ok) {
      expect(ok.settings.server.port).toBe(9999)
      expect(ok.settings.server.host).toBe('127.0.0.1')
      expect(ok.settings.security.requireAuthenticationForEvents).toBe(true)
      expect(ok.settings.security.eventsAuthenticationKeys[0]?.key).toBe('k${literal}')
    }
    const missing = parseCoreSettings({ security: { eventsAuthenticationKeys: [{ key: '${NOT_SET_ANYWHERE}' }] } }, {})
    expect(missing.ok).toBe(false)
    if (!missing.ok) expect(missing.problems).toContainEqual({ path: '/security/eventsAuthenticationKeys/0/key', message: 'environment variable NOT_SET_ANYWHERE is not set' })
  })

  it('uses the embedded default (all topics into ./data/events) when no destination is defined', async () => {
    const dir = await tempDir()
    const app = await start({ document: { server: { instanceId: 'd' } }, baseDir: dir })
    await app.inject({ method: 'POST', url: '/events/generic/rk', payload: { a: 1 } })
    const files = await listFiles(join(dir, 'data', 'events'))
    expect(files[0]).toMatch(/^generic\/rk\/\d{4}\/\d\d\/\d\d\/\d\d\/d_events_0000000001\.jsonl$/)
  })
})

describe('a DSS eventServerSettings block', () => {
  const dss = {
    eventServerSettings: {
      requireAuthenticationForEvents: true,
      eventsAuthenticationKeys: [{ key: 'k-general' }, { key: 'k-svc' }],
      requireAuthenticationForStats: false,
      statsAuthenticationKeys: [],
      targets: [
        {
          type: 'FILE_LIKE_CONNECTION_PATH',
          topicsFiltering: 'ALL',
          topics: [],
          routingKeysFiltering: 'ALL',
          routingKeys: [],
          requiredAuthKey: null,
          runAs: 'dssuser',
          fileLikeConnectionName: 'filesystem_root',
          fileLikePathWithinConnection: 'audit',
          folderByTopic: true,
          folderByRoutingKey: true,
          partitioningPeriod: 'DAY',
          flushEveryBytes: 1000000,
          flushEveryS: 300
        },
        {
          type: 'FILE_LIKE_CONNECTION_PATH',
          topicsFiltering: 'SELECTED',
          topics: ['apinode-query'],
          routingKeysFiltering: 'SELECTED',
          routingKeys: ['rk-svc'],
          requiredAuthKey: 'k-svc',
          fileLikeConnectionName: 'filesystem_root',
          fileLikePathWithinConnection: 'svc',
          folderByTopic: false,
          folderByRoutingKey: false,
          partitioningPeriod: 'HOUR',
          flushEveryBytes: 0,
          flushEveryS: 0
        }
      ]
    },
    server: { instanceId: 'imported' },
    connections: { filesystem_root: { type: 'filesystem', root: './dss-root' } }
  }

  it('is mapped onto security and destinations, and routes like DSS', async () => {
    const dir = await tempDir()
    const app = await start({ document: dss, baseDir: dir })
    expect([...app.eventServer.destinations.keys()]).toEqual(['target-0', 'target-1'])
    expect(app.eventServer.warnings).toContain('/eventServerSettings/targets/0/runAs is ignored: files are written as the user running this server')
    expect((await app.inject({ method: 'POST', url: '/events/generic/x', payload: { a: 1 } })).statusCode).toBe(401)
    await app.inject({ method: 'POST', url: '/events/apinode-query/rk-svc', headers: { authorization: 'Bearer k-svc' }, payload: { q: 1 } })
    await app.inject({ method: 'POST', url: '/events/apinode-query/rk-svc', headers: { authorization: 'Bearer k-general' }, payload: { q: 2 } })
    const events = await readEvents(join(dir, 'dss-root'))
    const where = events.map((e) => `${e.record.clientEvent.q} ${e.file.replace(/\d{4}\/\d\d\/\d\d/, 'DATE').replace(/_\d+\.jsonl/, '')}`).sort()
    expect(where).toEqual([
      '1 audit/apinode-query/rk-svc/DATE/imported_target-0',
      '1 svc/DATE/HH/imported_target-1'.replace('HH', events.find((e) => e.file.startsWith('svc'))?.file.split('/')[4] ?? ''),
      '2 audit/apinode-query/rk-svc/DATE/imported_target-0'
    ])
  })

  it('names a missing DSS connection clearly', async () => {
    const dir = await tempDir()
    const { problems } = await checkSettings({ ...dss, connections: {} }, dir)
    expect(problems).toContainEqual(expect.objectContaining({ path: '/destinations/0/connection', message: expect.stringContaining('got "filesystem_root"') }))
  })
})

describe('settings files and the command line', () => {
  it('`start` with no settings file runs the embedded default: every topic into ./data/events', async () => {
    const dir = await tempDir()
    const server = await spawnServer([], dir)
    const res = await fetch(`${server.url}/events`, { method: 'POST', body: JSON.stringify({ topic: 'generic', routingKey: 'rk-1', msgType: 'm' }) })
    expect(res.status).toBe(200)
    server.process.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    const events = await readEvents(join(dir, 'data', 'events'))
    expect(events.map((e) => e.file.split('/').slice(0, 2).join('/'))).toEqual(['generic/rk-1'])
    expect(server.output()).toContain('no destination is defined: using the default destination')
  })

  it('`check` validates a YAML file: exit 0 when valid, 1 with every problem and its path otherwise', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'good.yaml'), 'connections:\n  local: { type: filesystem, root: ./out }\ndestinations:\n  - { name: all, connection: local }\n')
    await writeFile(join(dir, 'bad.yaml'), 'server:\n  port: -1\ndestinations:\n  - { name: "bad name", connection: local }\n')
    const good = await cli(['check', '--config', join(dir, 'good.yaml')], dir)
    expect(good.code).toBe(0)
    expect(good.stdout).toContain('settings are valid')
    const bad = await cli(['check', '-c', join(dir, 'bad.yaml')], dir)
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('/server/port:')
    expect(bad.stderr).toContain('/destinations/0/name: expected a string matching')
  })

  it('reads JSON files and resolves relative roots against the settings file folder', async () => {
    const dir = await tempDir()
    const conf = join(dir, 'conf')
    await mkdir(conf)
    await writeFile(join(conf, 'settings.json'), JSON.stringify(fsSettings()))
    const { readSettingsFile } = await import('../core/settings.js')
    const source = await readSettingsFile(join(conf, 'settings.json'))
    const app = await start({ document: source.document, baseDir: source.baseDir })
    await app.inject({ method: 'POST', url: '/events/t/r', payload: { a: 1 } })
    expect(await listFiles(join(conf, 'out'))).toHaveLength(1)
    expect(await listFiles(join(conf, 'data', 'state'))).not.toEqual([])
  })

  it('explains an unreadable or unparsable file', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'broken.json'), '{ nope')
    const broken = await cli(['check', '--config', join(dir, 'broken.json')], dir)
    expect(broken.code).toBe(1)
    expect(broken.stderr).toMatch(/EVS_ERR_SETTINGS_READ: Cannot read settings file .*broken\.json/)
    const missing = await cli(['check', '--config', join(dir, 'missing.yaml')], dir)
    expect(missing.stderr).toMatch(/ENOENT/)
    const usage = await cli(['frobnicate'], dir)
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('Usage: dss-event-server')
  })
})
