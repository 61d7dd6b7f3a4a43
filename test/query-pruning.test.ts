import { afterAll, describe, expect, it } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { canAppend, type AppendableConnection, type Connection, type ObjectInfo } from '../core/connection.js'
import { newQueryStats } from '../core/destination.js'
import { buildServer, queryEvents } from '../index.js'
import { listFiles } from './helpers.js'

const HOUR = 3_600_000
const FIRST = Date.UTC(2026, 9, 29, 0, 30)
const HOURS = 24 * 34 // from 29 October to 1 December: three months, November whole
const TOPICS = ['generic', 'authfail']
const ROUTING_KEYS = ['node-1', 'node-2']

interface Calls {
  list: string[]
  listFolders: string[]
  listed: string[]
  opened: string[]
}

/** The connection as the query uses it, counting listings and the files it opens. */
function counting (calls: Calls) {
  return (c: Connection): Connection => {
    if (!canAppend(c)) throw new Error(`counting wraps a filesystem connection, got ${c.type}`)
    return counted(c, calls)
  }
}

function counted (c: AppendableConnection, calls: Calls): AppendableConnection {
  return {
    type: c.type,
    name: c.name,
    capabilities: c.capabilities,
    put: c.put.bind(c),
    delete: c.delete.bind(c),
    check: c.check.bind(c),
    close: c.close.bind(c),
    async read (key) {
      calls.opened.push(key)
      return await c.read(key)
    },
    async * list (prefix): AsyncIterable<ObjectInfo> {
      calls.list.push(prefix)
      for await (const info of c.list(prefix)) {
        calls.listed.push(info.key)
        yield info
      }
    },
    async * listFolders (folder): AsyncIterable<string> {
      calls.listFolders.push(folder)
      yield * (c.listFolders as (f: string) => AsyncIterable<string>)(folder)
    },
    localPath (key) {
      calls.opened.push(key)
      return c.localPath(key)
    }
  }
}

interface Trail { dir: string, document: Record<string, unknown>, sent: Array<{ id: number, time: number }>, files: string[] }
const trails = new Map<string, Promise<Trail>>()
afterAll(async () => {
  for (const trail of trails.values()) await rm((await trail).dir, { recursive: true, force: true })
})

/** Two events an hour for five weeks, each hour in one of the four topic and routing-key folders. */
async function trail (destination: Record<string, unknown>): Promise<Trail> {
  const key = JSON.stringify(destination)
  let found = trails.get(key)
  if (found === undefined) trails.set(key, found = write(destination))
  return await found
}

async function write (destination: Record<string, unknown>): Promise<Trail> {
  const dir = await mkdtemp(join(tmpdir(), 'evs-prune-'))
  const clock = { t: FIRST }
  const { timeZone, ...rest } = destination as { timeZone?: string }
  destination = rest
  const document = {
    server: { instanceId: 'prune', ...(timeZone !== undefined ? { timeZone } : {}) },
    connections: { store: { type: 'filesystem', root: './out' } },
    destinations: [{ name: 'audit', connection: 'store', path: 'audit', durability: 'write', ...destination }]
  }
  const app = await buildServer({ document, baseDir: dir, logger: false, now: () => clock.t })
  const sent: Array<{ id: number, time: number }> = []
  for (let h = 0; h < HOURS; h++) {
    clock.t = FIRST + h * HOUR
    const batch = [0, 1].map((k) => ({ id: 2 * h + k, topic: TOPICS[h % 2], routingKey: ROUTING_KEYS[(h >> 1) % 2] }))
    const res = await app.inject({ method: 'POST', url: '/events', payload: batch })
    expect(res.statusCode).toBe(200)
    for (const e of batch) sent.push({ id: e.id, time: clock.t })
  }
  await app.close()
  return { dir, document, sent, files: await listFiles(join(dir, 'out')) }
}

describe('query pruning: a one-hour query over two months of data', () => {
  const from = Date.UTC(2026, 10, 20, 13)
  const to = from + HOUR

  it.each([
    ['HOUR', {}, /\/2026\/11\/20\/13\/[^/]+$/, 1 + TOPICS.length + TOPICS.length * ROUTING_KEYS.length],
    ['DAY', { partitioningPeriod: 'DAY' }, /\/2026\/11\/20\/[^/]+$/, 1 + TOPICS.length + TOPICS.length * ROUTING_KEYS.length],
    ['MONTH', { partitioningPeriod: 'MONTH' }, /\/2026\/11\/[^/]+$/, 1 + TOPICS.length + TOPICS.length * ROUTING_KEYS.length],
    ['pathFormat dt=%Y-%M-%D/h=%H/%{topic}_%{routingKey}', { pathFormat: 'dt=%Y-%M-%D/h=%H/%{topic}_%{routingKey}' }, /^audit\/dt=2026-11-20\/h=13\//, 1 + 2],
    ['pathFormat %Y%M/%{topic} (no routing key)', { pathFormat: '%Y%M/%{topic}' }, /^audit\/202611\//, 1 + TOPICS.length]
  ])('%s: lists and opens only the files of the partitions holding that hour', async (_name, destination, partition, maxListCalls) => {
    const { dir, document, sent, files } = await trail(destination)
    const calls: Calls = { list: [], listFolders: [], listed: [], opened: [] }
    const stats = newQueryStats()
    const ids: number[] = []
    for await (const event of queryEvents({ document, baseDir: dir, from, to, stats, wrapConnection: counting(calls) })) {
      ids.push((event.record.clientEvent as { id: number }).id)
    }
    expect(ids.sort((a, b) => a - b)).toEqual(sent.filter((e) => e.time >= from && e.time < to).map((e) => e.id))
    const inPartition = files.filter((f) => partition.test(f)).sort()
    expect(inPartition.length).toBeGreaterThan(0)
    expect(files.length).toBeGreaterThan(inPartition.length * 2)
    expect([...calls.opened].sort()).toEqual(inPartition)
    // Listings returned nothing but those files: no folder of another hour, day or month was listed.
    expect([...calls.listed].sort()).toEqual(inPartition)
    expect(calls.list.length + calls.listFolders.length).toBeLessThanOrEqual(maxListCalls)
    expect(stats.listCalls).toBe(calls.list.length + calls.listFolders.length)
    expect(stats.filesOpened).toBe(inPartition.length)
  }, 120_000)

  it('a topic and routing-key filter prunes their folders too: one listing, of that hour\'s folder', async () => {
    const { dir, document, sent, files } = await trail({})
    const calls: Calls = { list: [], listFolders: [], listed: [], opened: [] }
    const found: number[] = []
    for await (const event of queryEvents({ document, baseDir: dir, from, to, topics: ['authfail'], routingKeys: ['node-1', 'node-2'], wrapConnection: counting(calls) })) {
      found.push((event.record.clientEvent as { id: number }).id)
    }
    const wanted = sent.filter((e) => e.time >= from && e.time < to && TOPICS[Math.floor(e.id / 2) % 2] === 'authfail').map((e) => e.id)
    expect(found.sort((a, b) => a - b)).toEqual(wanted)
    expect(calls.listFolders).toEqual([])
    expect(calls.list).toEqual(['audit/authfail/node-1/2026/11/20/13/', 'audit/authfail/node-2/2026/11/20/13/'])
    expect(calls.opened).toEqual(files.filter((f) => f.startsWith('audit/authfail/') && f.includes('/2026/11/20/13/')))
  }, 120_000)

  it('a week in the middle of the data lists each topic and routing key\'s week, not the whole trail', async () => {
    const { dir, document, sent, files } = await trail({})
    const calls: Calls = { list: [], listFolders: [], listed: [], opened: [] }
    const weekFrom = Date.UTC(2026, 10, 9, 6)
    const weekTo = Date.UTC(2026, 10, 16, 6)
    const found: number[] = []
    for await (const event of queryEvents({ document, baseDir: dir, from: weekFrom, to: weekTo, wrapConnection: counting(calls) })) found.push((event.record.clientEvent as { id: number }).id)
    expect(found.sort((a, b) => a - b)).toEqual(sent.filter((e) => e.time >= weekFrom && e.time < weekTo).map((e) => e.id))
    const inWeek = files.filter((f) => {
      const m = /\/2026\/(\d\d)\/(\d\d)\/(\d\d)\//.exec(f) as RegExpExecArray
      const t = Date.UTC(2026, Number(m[1]) - 1, Number(m[2]), Number(m[3]))
      return t >= weekFrom - HOUR + 1 && t < weekTo
    })
    expect([...calls.opened].sort()).toEqual(inWeek.sort())
    expect(calls.listed.length).toBeLessThan(files.length / 4)
  }, 120_000)

  it('in a zone with daylight saving time, the hour that occurs twice is one folder spanning two hours', async () => {
    // 1 November 2026, New York: 01:00-02:00 EDT (05:00Z), then 01:00-02:00 EST again (06:00Z).
    const { dir, document, sent, files } = await trail({ timeZone: 'America/New_York' })
    for (const [hourFrom, hourTo] of [[Date.UTC(2026, 10, 1, 6), Date.UTC(2026, 10, 1, 7)], [Date.UTC(2026, 10, 1, 4, 45), Date.UTC(2026, 10, 1, 5, 40)]] as const) {
      const calls: Calls = { list: [], listFolders: [], listed: [], opened: [] }
      const found: number[] = []
      for await (const event of queryEvents({ document, baseDir: dir, from: hourFrom, to: hourTo, wrapConnection: counting(calls) })) found.push((event.record.clientEvent as { id: number }).id)
      expect(found.sort((a, b) => a - b)).toEqual(sent.filter((e) => e.time >= hourFrom && e.time < hourTo).map((e) => e.id))
      expect(found.length).toBeGreaterThan(0)
      const local = hourFrom === Date.UTC(2026, 10, 1, 6) ? ['/2026/11/01/01/'] : ['/2026/11/01/00/', '/2026/11/01/01/']
      expect([...calls.opened].sort()).toEqual(files.filter((f) => local.some((l) => f.includes(l))).sort())
    }
  }, 120_000)
})
