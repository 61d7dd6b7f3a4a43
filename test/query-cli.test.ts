import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile, spawn } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gunzipSync } from 'node:zlib'
import { BIN } from './child-server.js'
import { listFiles, onCleanup, start } from './helpers.js'
import { startS3, S3_COMPAT, S3_CREDENTIALS, type S3Emulator } from './emulators/s3.js'
import { expected, instanceOptions, trailEvents, writeTrail, type SentEvent, type TrailInstance, type TrailWriter } from './query-trail.js'

interface Run { code: number, stdout: string, stderr: string }

async function cli (args: string[], cwd: string): Promise<Run> {
  return await promisify(execFile)(process.execPath, [BIN, 'query', ...args], { cwd, maxBuffer: 64 * 1024 * 1024 })
    .then(({ stdout, stderr }) => ({ code: 0, stdout, stderr }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }))
}

async function eventually (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** `query --follow` as a child process, its output collected as it comes. */
function follow (args: string[], cwd: string): { stdout: () => string, stderr: () => string, stop: () => Promise<number | string> } {
  const child = spawn(process.execPath, [BIN, 'query', '--follow', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')))
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    stop: async () => {
      child.kill('SIGINT')
      return await exited
    }
  }
}

const idsOf = (ndjson: string): number[] => ndjson.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l).clientEvent.id as number).sort((a, b) => a - b)

describe('dss-event-server query (command line)', () => {
  let dir: string
  let events: SentEvent[]
  const document = (extra: TrailInstance = {}): Record<string, unknown> => ({
    server: { instanceId: extra.instanceId ?? 'reader', stateDir: extra.stateDir ?? './state', trustedProxies: ['127.0.0.1'] },
    connections: { store: { type: 'filesystem', root: './out' }, other: { type: 'filesystem', root: './other' } },
    destinations: [
      { name: 'audit', connection: 'store', path: 'audit', ...instanceOptions(extra) },
      { name: 'second', connection: 'other', path: 'x' }
    ]
  })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
    events = trailEvents(8, 6)
    const writer: TrailWriter = { baseDir: dir, document }
    await (await writeTrail(writer, events, false)).close()
    await writeFile(join(dir, 'settings.json'), JSON.stringify(document()))
  }, 120_000)

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('piped, prints the stored lines as NDJSON and nothing else; stderr stays empty', async () => {
    const run = await cli(['-c', 'settings.json', '--destination', 'audit', '--where', 'authUser=admin', '--topic', 'generic'], dir)
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(idsOf(run.stdout)).toEqual(expected(events, { users: ['admin'], topics: ['generic'] }))
    // Byte for byte the stored lines.
    const stored = new Set<string>()
    for (const file of await listFiles(join(dir, 'out'))) {
      const data = await readFile(join(dir, 'out', file))
      for (const line of (file.endsWith('.gz') ? gunzipSync(data) : data).toString('utf8').split('\n')) stored.add(line)
    }
    const printed = run.stdout.trimEnd().split('\n')
    expect(printed.length).toBeGreaterThan(0)
    expect(printed.filter((line) => !stored.has(line))).toEqual([])
  })

  it('--format csv and table with --fields, --order time, --limit', async () => {
    const csv = await cli(['-c', 'settings.json', '-d', 'audit', '--format', 'csv', '--fields', 'serverTimestamp,topic,routingKey,authUser,id,details', '--order', 'time', '--limit', '4'], dir)
    expect(csv.code).toBe(0)
    const rows = csv.stdout.trimEnd().split('\r\n')
    expect(rows[0]).toBe('serverTimestamp,topic,routingKey,authUser,id,details')
    expect(rows.slice(1).map((r) => Number(r.split(',')[4]))).toEqual(events.slice(0, 4).map((e) => e.id))
    // A value holding quotes or commas is quoted, quotes doubled.
    expect(rows[1]).toMatch(/,"\{""note"":/)
    const table = await cli(['-c', 'settings.json', '-d', 'audit', '--format', 'table', '--fields', 'serverTimestamp,authUser,msgType', '--limit', '3', '--order', 'time'], dir)
    const lines = table.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^serverTimestamp\s+authUser\s+msgType$/)
    expect(lines).toHaveLength(4)
    expect(lines[1]).toContain(events[0]?.authUser)
  })

  it('--count-by prints counts per group, most first', async () => {
    const run = await cli(['-c', 'settings.json', '-d', 'audit', '--count-by', 'authUser,topic', '--format', 'ndjson'], dir)
    expect(run.code).toBe(0)
    const groups = run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l))
    const reference = new Map<string, number>()
    for (const e of events) reference.set(`${e.authUser}|${e.topic}`, (reference.get(`${e.authUser}|${e.topic}`) ?? 0) + 1)
    expect(new Map(groups.map((g) => [`${g.authUser}|${g.topic}`, g.count]))).toEqual(reference)
    expect(groups.map((g) => g.count)).toEqual([...groups.map((g) => g.count)].sort((a, b) => b - a))
  })

  it('exit code 2 and a clear message: bad --where, unknown or ambiguous destination, bad time, unknown format', async () => {
    const where = await cli(['-c', 'settings.json', '-d', 'audit', '--where', 'clientEvent.projectKey'], dir)
    expect(where.code).toBe(2)
    expect(where.stdout).toBe('')
    expect(where.stderr).toContain('EVS_ERR_QUERY_INVALID: Invalid --where expression at character 23: expected =, != or ~ after the field path')
    expect(where.stderr).toContain('  clientEvent.projectKey\n                        ^')
    const regex = await cli(['-c', 'settings.json', '-d', 'audit', '--where', 'authUser~/(/'], dir)
    expect(regex.code).toBe(2)
    expect(regex.stderr).toMatch(/at character 10: invalid regular expression/)
    const unknown = await cli(['-c', 'settings.json', '-d', 'nope'], dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('No destination is named "nope"; settings define "audit", "second"')
    const ambiguous = await cli(['-c', 'settings.json'], dir)
    expect(ambiguous.code).toBe(2)
    expect(ambiguous.stderr).toContain('name the one to read with --destination')
    const time = await cli(['-c', 'settings.json', '-d', 'audit', '--from', '25/11/2026'], dir)
    expect(time.code).toBe(2)
    expect(time.stderr).toContain('--from expects a date')
    expect((await cli(['-c', 'settings.json', '-d', 'audit', '--format', 'xml'], dir)).code).toBe(2)
    expect((await cli(['-c', 'missing.json', '-d', 'audit'], dir)).code).toBe(2)
  })

  it('exit code 1 with the unreadable files on stderr, and every readable event on stdout', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
    onCleanup(async () => await rm(own, { recursive: true, force: true }))
    const few = trailEvents(2, 3)
    await (await writeTrail({ baseDir: own, document }, few, false)).close()
    const [file] = (await listFiles(join(own, 'out'))).filter((f) => f.endsWith('.jsonl'))
    await writeFile(join(own, 'out', `${file as string}.gz`), 'not gzip, not at all')
    await writeFile(join(own, 'settings.json'), JSON.stringify(document()))
    const run = await cli(['-c', 'settings.json', '-d', 'audit'], own)
    expect(run.code).toBe(1)
    expect(idsOf(run.stdout)).toEqual(expected(few, {}))
    expect(run.stderr).toMatch(/^warning: audit\/.*\.jsonl\.gz: cannot be read: /m)
    expect(run.stderr).toMatch(/1 file could not be read/)
  })

  it('--follow prints events written after it started, and stops cleanly on Ctrl-C', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
    onCleanup(async () => await rm(own, { recursive: true, force: true }))
    const doc = { server: { instanceId: 'live' }, connections: { store: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'store', path: 'audit', compression: 'gzip' }] }
    await writeFile(join(own, 'settings.json'), JSON.stringify(doc))
    const app = await start({ document: doc, baseDir: own })
    // Written before: not shown (no --from).
    await app.inject({ method: 'POST', url: '/events/generic/node-1', payload: { id: -1 } })
    const reader = follow(['-c', 'settings.json', '--interval', '200ms', '--where', 'kind=live'], own)
    let n = 0
    // Until the reader shows one, then ten more: all must appear, in order.
    await eventually(async () => {
      await app.inject({ method: 'POST', url: '/events/generic/node-1', payload: { id: n++, kind: 'live' } })
      await app.inject({ method: 'POST', url: '/events/generic/node-1', payload: { id: 100000 + n, kind: 'other' } })
      return reader.stdout().includes('"kind":"live"')
    }, 'the first followed event')
    const first = n
    for (let i = 0; i < 10; i++) await app.inject({ method: 'POST', url: `/events/authfail/node-${i % 2}`, payload: { id: first + i, kind: 'live' } })
    await eventually(() => idsOf(reader.stdout()).includes(first + 9), 'the later events')
    const seen = idsOf(reader.stdout())
    expect(seen.filter((id) => id >= first)).toEqual(Array.from({ length: 10 }, (_, i) => first + i))
    expect(seen).not.toContain(-1)
    expect(new Set(seen).size).toBe(seen.length)
    expect(await reader.stop()).toBe(130)
    expect(reader.stderr()).toBe('')
  })

  it('on a terminal: a table fitting its width by default, and a summary on stderr', async () => {
    const { Writable } = await import('node:stream')
    const { queryCommand } = await import('../cli/query-command.js')
    const fake = (columns: number): NodeJS.WriteStream & { text: () => string } => {
      let text = ''
      const stream = new Writable({ write (chunk: Buffer, _e, done) { text += chunk.toString(); done() } })
      return Object.assign(stream, { isTTY: true, columns, text: () => text }) as unknown as NodeJS.WriteStream & { text: () => string }
    }
    const stdout = fake(60)
    const stderr = fake(60)
    const cwd = process.cwd()
    process.chdir(dir)
    try {
      expect(await queryCommand({ config: 'settings.json', destination: 'audit', order: 'time' }, { stdout, stderr })).toBe(0)
    } finally {
      process.chdir(cwd)
    }
    const lines = stdout.text().trimEnd().split('\n')
    // Six columns in sixty characters: the widest give way, cut with an ellipsis.
    expect(lines[0]).toMatch(/^serverT\S*\s+topic\s+routing\S*\s+authUse\S*\s+msgType\S*\s+origAd/)
    expect(lines).toHaveLength(events.length + 1)
    expect(Math.max(...lines.map((l) => [...l].length))).toBeLessThanOrEqual(60)
    expect(lines[1]).toContain(events[0]?.authUser.slice(0, 5))
    expect(stderr.text()).toMatch(new RegExp(`${events.length} events from \\d+ files \\(.* scanned\\) in [\\d.]+ s\\n$`))
  })

  it('stops quietly when the reader of its output goes away (| head)', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
    onCleanup(async () => await rm(own, { recursive: true, force: true }))
    const folder = join(own, 'out', 'audit', 'generic', 'n1', '2026', '11', '25', '10')
    await mkdir(folder, { recursive: true })
    const line = (i: number): string => `{"clientEvent":{"id":${i},"pad":"${'x'.repeat(200)}"},"origAddress":"10.0.0.1","serverTimestamp":"2026-11-25T10:00:00.000+0000"}\n`
    await writeFile(join(folder, 'big_audit_0000000001.jsonl'), Array.from({ length: 50_000 }, (_, i) => line(i)).join(''))
    await writeFile(join(own, 'settings.json'), JSON.stringify({ connections: { store: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'store', path: 'audit' }] }))
    const run = await promisify(execFile)('bash', ['-c', `set -o pipefail; "${process.execPath}" "${BIN}" query -c settings.json | head -n 2`], { cwd: own })
      .then(({ stdout, stderr }) => ({ code: 0, stdout, stderr }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }))
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout.split('\n').filter((l) => l !== '')).toHaveLength(2)
  })

  describe('on S3 (s3rver)', () => {
    let s3: S3Emulator
    beforeAll(async () => { s3 = await startS3(['evs']) })
    afterAll(async () => { await s3.dispose() })
    const s3Doc = (endpoint: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      server: { instanceId: 'live' },
      connections: { store: { type: 's3', bucket: 'evs', prefix: 'cli/', endpoint, ...S3_CREDENTIALS, ...S3_COMPAT } },
      // One folder level: s3rver lists deeper folders wrongly (see S3RVER_SHALLOW_FOLDERS).
      destinations: [{ name: 'audit', connection: 'store', path: 'audit', flushEveryS: 0.2, pathFormat: 'dt=%Y%M%D%H_%{topic}', ...extra }]
    })

    it('an unreachable store: exit code 2, saying which destination could not be listed', async () => {
      const own = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
      onCleanup(async () => await rm(own, { recursive: true, force: true }))
      await writeFile(join(own, 'settings.json'), JSON.stringify(s3Doc('http://127.0.0.1:9')))
      const run = await cli(['-c', 'settings.json', '--from', 'now-1h'], own)
      expect(run.code).toBe(2)
      expect(run.stdout).toBe('')
      expect(run.stderr).toMatch(/^EVS_ERR_QUERY_STORE: Cannot list the files of destination "audit": .*ECONNREFUSED/m)
    })

    it('--follow polls the store for new objects at --interval', async () => {
      const own = await mkdtemp(join(tmpdir(), 'evs-query-cli-'))
      onCleanup(async () => await rm(own, { recursive: true, force: true }))
      const doc = s3Doc(s3.endpoint)
      await writeFile(join(own, 'settings.json'), JSON.stringify(doc))
      const app = await start({ document: doc, baseDir: own })
      const reader = follow(['-c', 'settings.json', '--interval', '300ms'], own)
      let n = 0
      await eventually(async () => {
        await app.inject({ method: 'POST', url: '/events/generic/node-1', payload: { id: n++ } })
        await new Promise((resolve) => setTimeout(resolve, 200))
        return reader.stdout() !== ''
      }, `the first uploaded event (stderr: ${reader.stderr()})`, 60_000)
      const first = n
      await app.inject({ method: 'POST', url: '/events/apinode-query/svc', payload: [{ id: first }, { id: first + 1 }] })
      await eventually(() => idsOf(reader.stdout()).includes(first + 1), 'the later events', 60_000)
      expect(idsOf(reader.stdout()).filter((id) => id >= first)).toEqual([first, first + 1])
      expect(await reader.stop()).toBe(130)
    }, 90_000)
  })
})
