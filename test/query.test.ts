import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { newQueryStats, type QueryProblem, type StoredEvent } from '../core/destination.js'
import { buildServer, queryEvents, type QueryEventsOptions } from '../index.js'
import { compressLines } from '../plugins/files/compression.js'
import { listFiles } from './helpers.js'
import { expected, HOUR, instanceOptions, ROUTING_KEYS, T0, timeRanges, trailEvents, USERS, WHERE_CASES, writeTrail, type Filters, type SentEvent, type TrailWriter } from './query-trail.js'

function fsWriter (dir: string, layout: Record<string, unknown> = {}): TrailWriter {
  return {
    baseDir: dir,
    document: (extra = {}) => ({
      server: { instanceId: extra.instanceId ?? 'reader', stateDir: extra.stateDir ?? './state', trustedProxies: ['127.0.0.1'] },
      connections: { store: { type: 'filesystem', root: './out' } },
      destinations: [{ name: 'audit', connection: 'store', path: 'audit', ...instanceOptions(extra), ...layout }]
    })
  }
}

async function ids (options: QueryEventsOptions): Promise<number[]> {
  const out: number[] = []
  for await (const event of queryEvents(options)) out.push((event.record.clientEvent as { id: number }).id)
  return out
}

async function all (options: QueryEventsOptions): Promise<StoredEvent[]> {
  const out: StoredEvent[] = []
  for await (const event of queryEvents(options)) out.push(event)
  return out
}

const sorted = (list: number[]): number[] => [...list].sort((a, b) => a - b)

describe('query: reading back a filesystem trail', () => {
  let dir: string
  let writer: TrailWriter
  let events: SentEvent[]
  let close: () => Promise<void>

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'evs-query-'))
    writer = fsWriter(dir)
    events = trailEvents()
    close = (await writeTrail(writer, events, true)).close
    // Files still being written: a .jsonl with half a line, a .jsonl.gz with half a gzip member,
    // a .jsonl.zst with half a zstd frame.
    const files = await listFiles(join(dir, 'out'))
    expect(files.filter((f) => f.endsWith('.parquet')).length).toBeGreaterThan(0)
    const plain = files.filter((f) => f.includes('/q-3_') && f.endsWith('.jsonl')).at(-1) as string
    const gz = files.filter((f) => f.includes('/q-2_') && f.endsWith('.jsonl.gz')).at(-1) as string
    const zst = files.filter((f) => f.includes('/q-4_') && f.endsWith('.jsonl.zst')).at(-1) as string
    await appendFile(join(dir, 'out', plain), '{"clientEvent":{"id":99999,"authUser":"admin"},"origAd')
    const line = `{"clientEvent":{"id":99998,"authUser":"admin","pad":"${'x'.repeat(300)}"},"origAddress":"1.2.3.4","serverTimestamp":"2026-11-25T10:00:00.000+0000"}\n`
    const member = gzipSync(line)
    await appendFile(join(dir, 'out', gz), member.subarray(0, member.length >> 1))
    const frame = await compressLines('zstd', [Buffer.from(line)])
    await appendFile(join(dir, 'out', zst), frame.subarray(0, frame.length >> 1))
  }, 120_000)

  afterAll(async () => {
    await close()
    await rm(dir, { recursive: true, force: true })
  })

  const base = (): QueryEventsOptions => ({ document: writer.document(), baseDir: dir })

  it('returns every event once, from plain, gzip, zstd and Parquet files, sealed and still open, and counts the open tails', async () => {
    const stats = newQueryStats()
    const problems: QueryProblem[] = []
    const found = await ids({ ...base(), stats, onProblem: (p) => problems.push(p) })
    expect(sorted(found)).toEqual(expected(events, {}))
    expect(problems).toEqual([])
    expect(stats.filesPartial).toBe(3)
    expect(stats.eventsMatched).toBe(events.length)
    expect(stats.filesUnreadable).toBe(0)
  })

  it('every combination of time range, topics, routing keys and a field filter returns exactly the expected events', async () => {
    const topicSets: Array<string[] | undefined> = [undefined, ['apinode-query'], ['generic', 'authfail'], ['no-such-topic']]
    const rkSets: Array<string[] | undefined> = [undefined, ['rk/svc 2'], ROUTING_KEYS]
    const whereSets: Array<typeof WHERE_CASES> = [[], ...WHERE_CASES.map((w) => [w]), [WHERE_CASES[0], WHERE_CASES[2]] as typeof WHERE_CASES]
    let checked = 0
    let n = 0
    for (const range of timeRanges(events)) {
      for (const topics of topicSets) {
        for (const routingKeys of rkSets) {
          // Every time range, topic set and routing-key set together, each with three field filters
          // in turn (all twelve come round), and every field filter alone below.
          for (const where of [0, 4, 8].map((k) => whereSets[(n + k) % whereSets.length] as typeof WHERE_CASES)) {
            const filters: Filters = { ...range, ...(topics !== undefined ? { topics } : {}), ...(routingKeys !== undefined ? { routingKeys } : {}) }
            const found = await ids({ ...base(), ...filters, where: where.map((w) => w.expression) })
            expect(sorted(found), JSON.stringify({ filters, where: where.map((w) => w.expression) })).toEqual(expected(events, filters, where))
            checked++
          }
          n++
        }
      }
    }
    for (const where of whereSets) {
      expect(sorted(await ids({ ...base(), where: where.map((w) => w.expression) })), where.map((w) => w.expression).join(' ')).toEqual(expected(events, {}, where))
      checked++
    }
    expect(checked).toBe(5 * 4 * 3 * 3 + 12)
  }, 120_000)

  it('--user, --msg-type and --address take several values (any of them), combined with the rest', async () => {
    const filters: Filters = { users: ['admin', 'analyst-é'], msgTypes: ['login', 'api-query'], addresses: ['10.0.0.1', '10.0.0.3'], from: T0 + 2 * HOUR }
    expect(sorted(await ids({ ...base(), ...filters }))).toEqual(expected(events, filters))
  })

  it('--order time gives one stream sorted by serverTimestamp across files and instances', async () => {
    const found = await all({ ...base(), order: 'time', from: T0 + 10 * HOUR })
    const times = found.map((e) => e.time)
    expect(times).toEqual([...times].sort((a, b) => a - b))
    expect(sorted(found.map((e) => (e.record.clientEvent as { id: number }).id))).toEqual(expected(events, { from: T0 + 10 * HOUR }))
    // Within a file the order is the file's; across files, ties are broken the same way every time.
    expect(found.map((e) => e.line)).toEqual((await all({ ...base(), order: 'time', from: T0 + 10 * HOUR })).map((e) => e.line))
  })

  it('--limit stops after that many events; with --order time, the earliest ones', async () => {
    const stats = newQueryStats()
    const found = await all({ ...base(), order: 'time', limit: 5, stats })
    expect(found.map((e) => (e.record.clientEvent as { id: number }).id)).toEqual(events.slice(0, 5).map((e) => e.id))
    expect(await ids({ ...base(), limit: 3 })).toHaveLength(3)
    expect(await ids({ ...base(), limit: 0 })).toEqual([])
  })

  it('gives each event its routing, time and source file, and the stored record', async () => {
    const [event] = await all({ ...base(), where: ['clientEvent.id=3'] })
    const sent = events.find((e) => e.id === 3) as SentEvent
    expect(event).toMatchObject({ topic: sent.topic, routingKey: sent.routingKey, time: sent.time })
    expect(event?.source).toMatch(/^audit\/[^/]+\/[^/]+\/2026\/11\/2\d\/\d\d\/q-1_audit_\d{10}\.jsonl$/)
    expect(event?.record.serverTimestamp).toBe(new Date(sent.time).toISOString().replace('Z', '+0000'))
    expect(JSON.parse(event?.line as string)).toEqual(event?.record)
  })

  it('parses only lines whose bytes can match a field filter', async () => {
    const stats = newQueryStats()
    const found = await ids({ ...base(), where: ['authUser=marie.curie'], stats })
    expect(sorted(found)).toEqual(expected(events, { users: ['marie.curie'] }))
    // Candidates: lines holding "marie.curie" or a backslash (escaped strings).
    const backslashed = events.filter((e) => e.id % 9 === 4 || e.id % 6 === 0).length
    expect(stats.linesParsed).toBeLessThanOrEqual(found.length + backslashed)
    expect(stats.linesParsed).toBeLessThan(events.length / 2)
  })

  it('reports a corrupt file and a corrupt line, counts them, and reads everything else', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-'))
    try {
      const w = fsWriter(own)
      const few = trailEvents(3, 4)
      const { close: closeOwn } = await writeTrail(w, few, false)
      await closeOwn()
      const folder = join(own, 'out', 'audit', 'generic', 'dss-node-1', '2026', '11', '24', '20')
      await writeFile(join(folder, 'broken_audit_0000000001.jsonl.gz'), Buffer.concat([gzipSync('{"a":1}\n'), Buffer.from('not gzip at all, and long enough to be data')]))
      await writeFile(join(folder, 'other_audit_0000000001.jsonl'), 'this is not json\n{"clientEvent":{"id":5000},"origAddress":"x","serverTimestamp":"2026-11-24T20:30:00.000+0000"}\n')
      // A zstd file with a whole frame and then bytes that are no frame; a Parquet file that is not one.
      await writeFile(join(folder, 'broken_audit_0000000002.jsonl.zst'), Buffer.concat([await compressLines('zstd', [Buffer.from('{"clientEvent":{"id":5001},"origAddress":"x","serverTimestamp":"2026-11-24T20:30:00.000+0000"}\n')]), Buffer.from('no zstd frame here')]))
      await writeFile(join(folder, 'broken_audit_0000000003.parquet'), `PAR1${'x'.repeat(100)}PAR1`)
      const stats = newQueryStats()
      const problems: QueryProblem[] = []
      const found = await ids({ document: w.document(), baseDir: own, stats, onProblem: (p) => problems.push(p) })
      // The zstd file's whole frame is read before its bad bytes are reported.
      expect(sorted(found)).toEqual([...expected(few, {}), 5000, 5001].sort((a, b) => a - b))
      expect(stats.filesUnreadable).toBe(3)
      expect(stats.linesCorrupt).toBe(1)
      expect(problems.map((p) => p.source).sort()).toEqual([
        'audit/generic/dss-node-1/2026/11/24/20/broken_audit_0000000001.jsonl.gz',
        'audit/generic/dss-node-1/2026/11/24/20/broken_audit_0000000002.jsonl.zst',
        'audit/generic/dss-node-1/2026/11/24/20/broken_audit_0000000003.parquet',
        'audit/generic/dss-node-1/2026/11/24/20/other_audit_0000000001.jsonl'
      ])
      expect(problems.find((p) => p.source.endsWith('.zst'))?.message).toMatch(/cannot be read past byte \d+: not zstd data at byte \d+/)
      expect(problems.find((p) => p.source.endsWith('.parquet'))?.message).toMatch(/cannot be read/)
      expect(problems.find((p) => p.source.endsWith('.gz'))?.message).toMatch(/cannot be read/)
      expect(problems.find((p) => p.source.endsWith('.jsonl'))?.message).toMatch(/line at byte 0: not JSON/)
    } finally {
      await rm(own, { recursive: true, force: true })
    }
  })

  it('a Parquet file reads back as the very lines a jsonl destination stores for the same events, in any time zone', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-'))
    try {
      const destination = (name: string, extra: Record<string, unknown>): Record<string, unknown> => ({ name, connection: 'store', path: name, partitioningPeriod: 'DAY', ...extra })
      const document = {
        // Eastern time: offsets -0500 and, past the change of 2026-11-01, the same; March 8 moves to -0400.
        server: { instanceId: 'same', timeZone: 'America/New_York', trustedProxies: ['127.0.0.1'] },
        connections: { store: { type: 'filesystem', root: './out' } },
        destinations: [destination('plain', {}), destination('zst', { compression: 'zstd' }), destination('pq', { format: 'parquet', rowGroupRows: 3 })]
      }
      const clock = { t: Date.UTC(2026, 2, 8, 6, 59, 59, 998) }
      const app = await buildServer({ document, baseDir: own, logger: false, now: () => clock.t })
      const bodies = [
        '{"id":1,"msgType":"login","authUser":"admin"}',
        '{ "id" : 2,\n  "note": "two\\nlines, \\"quoted\\", \\u00e9 and é",\r\n "n": 1.50e+3, "big": 12345678901234567890 }',
        '{"id":3,"nested":{"a":[1,{"b":null}],"c":true},"projectKey":"\\u0043HURN"}',
        '{"id":4,"emoji":"😀","tab":"a\\tb"}',
        '{"id":5}'
      ]
      for (const [i, payload] of bodies.entries()) {
        clock.t += 1 + i * 3_600_000
        const res = await app.inject({ method: 'POST', url: '/events/generic/rk', headers: { 'content-type': 'application/json', 'x-forwarded-for': `10.0.0.${i}` }, payload })
        expect(res.statusCode, res.body).toBe(200)
      }
      await app.close()
      const files = await listFiles(join(own, 'out'))
      expect(files.filter((f) => f.startsWith('pq/') && f.endsWith('.parquet')).length).toBeGreaterThan(0)
      const lines = async (name: string): Promise<string[]> => (await all({ document, baseDir: own, destination: name, order: 'time' })).map((e) => e.line)
      const plain = await lines('plain')
      expect(plain).toHaveLength(bodies.length)
      expect(plain.some((l) => l.includes('-0500')) && plain.some((l) => l.includes('-0400'))).toBe(true)
      expect(await lines('pq')).toEqual(plain)
      expect(await lines('zst')).toEqual(plain)
      // And a query on the Parquet destination filters as on the others.
      const where = { where: ['projectKey=CHURN'], from: '2026-03-08T01:59:59.999-05:00' }
      expect((await all({ document, baseDir: own, destination: 'pq', ...where })).map((e) => e.line)).toEqual((await all({ document, baseDir: own, destination: 'plain', ...where })).map((e) => e.line))
    } finally {
      await rm(own, { recursive: true, force: true })
    }
  })

  it('refuses an unknown destination, a bad --where and a bad time with a clear error', async () => {
    await expect(ids({ ...base(), destination: 'nope' })).rejects.toMatchObject({ code: 'EVS_ERR_QUERY_DESTINATION', message: expect.stringContaining('"audit"') })
    await expect(ids({ ...base(), where: ['clientEvent.projectKey'] })).rejects.toMatchObject({ code: 'EVS_ERR_QUERY_INVALID', message: expect.stringContaining('at character 23') })
    await expect(ids({ ...base(), from: 'yesterday-ish' })).rejects.toMatchObject({ code: 'EVS_ERR_QUERY_INVALID' })
    await expect(ids({ ...base(), from: T0 + HOUR, to: T0 })).rejects.toMatchObject({ code: 'EVS_ERR_QUERY_INVALID' })
  })

  it('--order time over more files in one partition than are merged at once (runs spilled to disk)', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-'))
    try {
      const { buildServer } = await import('../index.js')
      const document = { server: { instanceId: 'many' }, connections: { store: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'store', path: 'audit', flushEveryBytes: 0, durability: 'write' }] }
      const clock = { t: T0 }
      const app = await buildServer({ document, baseDir: own, logger: false, now: () => clock.t })
      // 150 files (one per request) in one hour folder, written in an order unlike their times' order.
      const times = Array.from({ length: 150 }, (_, i) => T0 + ((i * 7919) % 150) * 1000)
      for (const [i, t] of times.entries()) {
        clock.t = t
        expect((await app.inject({ method: 'POST', url: `/events/generic/rk${i % 3}`, payload: [{ id: i }, { id: 1000 + i }] })).statusCode).toBe(200)
      }
      await app.close()
      expect((await listFiles(join(own, 'out'))).length).toBe(150)
      const found = await all({ document, baseDir: own, order: 'time' })
      expect(found.map((e) => e.time)).toEqual([...times, ...times].sort((a, b) => a - b))
      expect(sorted(found.map((e) => (e.record.clientEvent as { id: number }).id))).toEqual(sorted([...times.keys(), ...[...times.keys()].map((i) => 1000 + i)]))
      expect(found.every((e) => e.topic === 'generic' && /^rk[012]$/.test(e.routingKey))).toBe(true)
    } finally {
      await rm(own, { recursive: true, force: true })
    }
  })

  it('refuses a destination whose type cannot be read back, naming it', async () => {
    const fixture = join(import.meta.dirname, 'fixtures', 'dss-event-server-plugin-capture')
    await expect(ids({
      baseDir: join(fixture, '..'),
      document: { plugins: ['./dss-event-server-plugin-capture'], destinations: [{ name: 'mem', type: 'capture', label: 'x' }] }
    })).rejects.toMatchObject({ code: 'EVS_ERR_QUERY_DESTINATION', message: 'Destination "mem" is of type "capture", which cannot be read back (its plugin has no read)' })
  })

  it('reads a trail whose layout has no topic or routing-key folders, taking them from the events themselves', async () => {
    const own = await mkdtemp(join(tmpdir(), 'evs-query-'))
    try {
      const w = fsWriter(own, { folderByTopic: false, folderByRoutingKey: false, partitioningPeriod: 'DAY' })
      const few = trailEvents(6, 5).map((e) => ({ ...e, inBody: true }))
      const { close: closeOwn } = await writeTrail(w, few, false)
      await closeOwn()
      for (const filters of [{ topics: ['authfail'] }, { routingKeys: ['rk/svc 2'], users: USERS.slice(0, 2) }, { topics: ['generic', 'apinode-query'], from: T0 + HOUR }] as Filters[]) {
        expect(sorted(await ids({ document: w.document(), baseDir: own, ...filters })), JSON.stringify(filters)).toEqual(expected(few, filters))
      }
    } finally {
      await rm(own, { recursive: true, force: true })
    }
  })
})
