import { describe, expect, it } from 'vitest'
import pino from 'pino'
import { appendFile, readdir, readFile, writeFile } from 'node:fs/promises'
import { request as httpRequest, Agent } from 'node:http'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { fsSettings, listFiles, readEvents, start, tempDir } from './helpers.js'
import { spawnServer } from './child-server.js'

const silent = pino({ level: 'silent' })

async function settingsFile (dir: string, destination: Record<string, unknown> = {}): Promise<string> {
  const path = join(dir, 'settings.json')
  await writeFile(path, JSON.stringify(fsSettings(destination, { server: { instanceId: 'crash' } })))
  return path
}

function post (url: string, body: string, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/events/t/r`, { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('durability', () => {
  it('shares one fsync between concurrent requests (group commit) and syncs before answering', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings(), baseDir: dir })
    const responses = await Promise.all(Array.from({ length: 200 }, async (_, i) =>
      await app.inject({ method: 'POST', url: '/events/t/r', payload: { i } })))
    expect(responses.every((r) => r.statusCode === 200)).toBe(true)
    const stats = app.eventServer.destinations.get('all')?.stats?.() as { syncs: number, linesWritten: number }
    expect(stats.linesWritten).toBe(200)
    expect(stats.syncs).toBeGreaterThanOrEqual(1)
    expect(stats.syncs).toBeLessThan(100)
  })

  it('with durability "write", answers once written to the OS, without an fsync per request', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ durability: 'write' }), baseDir: dir })
    for (let i = 0; i < 5; i++) expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { i } })).statusCode).toBe(200)
    const stats = app.eventServer.destinations.get('all')?.stats?.() as { syncs: number, linesWritten: number }
    expect(stats.linesWritten).toBe(5)
    expect(stats.syncs).toBe(0)
    expect(await readEvents(join(dir, 'out'))).toHaveLength(5)
  })

  it('answers 503 with Retry-After when the disk refuses the write, and recovers when it accepts again', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings(), baseDir: dir })
    const { chmod, mkdir } = await import('node:fs/promises')
    await mkdir(join(dir, 'out', 'events'), { recursive: true })
    // A file where the topic folder must go: creating the folder fails, even as root.
    await writeFile(join(dir, 'out', 'events', 'blocked'), 'not a folder')
    const res = await app.inject({ method: 'POST', url: '/events/blocked/r', payload: { a: 1 } })
    expect(res.statusCode).toBe(503)
    expect(res.headers['retry-after']).toBeDefined()
    expect(res.json().code).toBe('EVS_ERR_DESTINATION_UNAVAILABLE')
    await chmod(join(dir, 'out', 'events', 'blocked'), 0o644)
    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'out', 'events', 'blocked'))
    expect((await app.inject({ method: 'POST', url: '/events/blocked/r', payload: { a: 2 } })).statusCode).toBe(200)
    const events = await readEvents(join(dir, 'out'))
    expect(events.map((e) => e.record.clientEvent.a)).toEqual([2])
  })

  it('SIGTERM: finishes in-flight requests, flushes and closes every file, exits 0', async () => {
    const dir = await tempDir()
    const server = await spawnServer(['--config', await settingsFile(dir)], dir)
    const agent = new Agent({ keepAlive: true })
    expect(await post(server.url, '{"n":1}', agent)).toBe(200)
    // A request whose body is still arriving when the signal comes.
    const inFlight = new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${server.url}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '7' } }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.write('{"n":')
      setTimeout(() => {
        server.process.kill('SIGTERM')
        setTimeout(() => req.end('2}'), 300)
      }, 200)
    })
    expect(await inFlight).toBe(200)
    expect(await server.exited).toBe(0)
    agent.destroy()
    expect(server.output()).toContain('stopped cleanly')
    const events = await readEvents(join(dir, 'out'))
    expect(events.map((e) => e.record.clientEvent.n)).toEqual([1, 2])
    const journal = await readFile(join(dir, 'data', 'state', 'all', 'journal.jsonl'), 'utf8')
    expect(journal.trim().split('\n')).toEqual(['{"next":2}']) // nothing left open
  })

  it('SIGKILL under load, then restart: every acknowledged event is there exactly once, every line whole', async () => {
    const dir = await tempDir()
    const settings = await settingsFile(dir, { flushEveryBytes: 20_000 })
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent({ keepAlive: true, maxSockets: 16 })
    const acked = new Set<number>()
    let next = 0
    let killed = false
    const worker = async (): Promise<void> => {
      while (!killed) {
        const ids = Array.from({ length: 1 + (next % 5) }, () => next++)
        const body = ids.map((id) => JSON.stringify({ id, pad: 'p'.repeat(id % 200) })).join('\n')
        try {
          if (await post(first.url, body, agent) === 200) for (const id of ids) acked.add(id)
        } catch {
          return // the server is gone
        }
      }
    }
    const workers = Array.from({ length: 16 }, async () => await worker())
    while (acked.size < 3000) await new Promise((resolve) => setTimeout(resolve, 20))
    first.process.kill('SIGKILL')
    killed = true
    expect(await first.exited).toBe('SIGKILL')
    await Promise.all(workers)
    agent.destroy()

    const second = await spawnServer(['--config', settings], dir)
    const agent2 = new Agent({ keepAlive: true })
    expect(await post(second.url, JSON.stringify({ id: -1 }), agent2)).toBe(200)
    agent2.destroy()
    second.process.kill('SIGTERM')
    expect(await second.exited).toBe(0)

    const events = await readEvents(join(dir, 'out')) // throws on any unparsable line
    const seen = new Map<number, number>()
    for (const { record } of events) seen.set(record.clientEvent.id, (seen.get(record.clientEvent.id) ?? 0) + 1)
    const missing = [...acked].filter((id) => !seen.has(id))
    const duplicated = [...seen].filter(([, count]) => count > 1)
    expect(missing).toEqual([])
    expect(duplicated).toEqual([])
    expect(seen.has(-1)).toBe(true)
  })

  it('repairs a torn last line left by a crash: cut, kept aside in the state folder, and logged', async () => {
    const dir = await tempDir()
    const settings = await settingsFile(dir)
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent()
    expect(await post(first.url, '{"n":1}\n{"n":2}', agent)).toBe(200)
    first.process.kill('SIGKILL')
    await first.exited
    const [file] = await listFiles(join(dir, 'out'))
    // What a power loss in the middle of an (unacknowledged) write leaves behind.
    await appendFile(join(dir, 'out', file as string), '{"clientEvent":{"n":3},"origAdd')

    const second = await spawnServer(['--config', settings], dir)
    expect(await post(second.url, '{"n":4}', agent)).toBe(200)
    second.process.kill('SIGTERM')
    await second.exited
    agent.destroy()
    const events = await readEvents(join(dir, 'out'))
    expect(events.map((e) => e.record.clientEvent.n)).toEqual([1, 2, 4])
    const torn = await readdir(join(dir, 'data', 'state', 'all', 'torn'))
    expect(torn).toHaveLength(1)
    expect(await readFile(join(dir, 'data', 'state', 'all', 'torn', torn[0] as string), 'utf8')).toBe('{"clientEvent":{"n":3},"origAdd')
    expect(second.output()).toContain('cut a torn tail left by a crash')
  })

  it('repairs a torn gzip member the same way', async () => {
    const dir = await tempDir()
    const settings = await settingsFile(dir, { compression: 'gzip' })
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent()
    expect(await post(first.url, '{"n":1}', agent)).toBe(200)
    expect(await post(first.url, '{"n":2}', agent)).toBe(200)
    first.process.kill('SIGKILL')
    await first.exited
    const [file] = await listFiles(join(dir, 'out'))
    const member = gzipSync('{"clientEvent":{"n":3}}\n')
    await appendFile(join(dir, 'out', file as string), member.subarray(0, member.length - 6))

    const second = await spawnServer(['--config', settings], dir)
    second.process.kill('SIGTERM')
    await second.exited
    agent.destroy()
    const events = await readEvents(join(dir, 'out'))
    expect(events.map((e) => e.record.clientEvent.n)).toEqual([1, 2])
  })
})

describe('commit log', () => {
  it('syncs once per commit however many files the commit touched', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ commitLog: true }), baseDir: dir })
    const responses = await Promise.all(Array.from({ length: 60 }, async (_, i) =>
      await app.inject({ method: 'POST', url: `/events/t/rk${i % 30}`, payload: { i } })))
    expect(responses.every((r) => r.statusCode === 200)).toBe(true)
    const stats = app.eventServer.destinations.get('all')?.stats?.() as { syncs: number, commits: number }
    expect(stats.syncs).toBeLessThanOrEqual(stats.commits)
    expect(stats.syncs).toBeLessThan(30)
    await app.close()
    expect(await readEvents(join(dir, 'out'))).toHaveLength(60)
    expect(await readdir(join(dir, 'data', 'state', 'all', 'commit-log'))).toEqual([])
  })

  it('after a crash that lost the files\' unsynced bytes (power loss), replays every acknowledged event exactly once', async () => {
    const dir = await tempDir()
    const settings = await settingsFile(dir, { commitLog: true })
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent({ keepAlive: true })
    const acked: number[] = []
    for (let i = 0; i < 40; i++) {
      const body = `${JSON.stringify({ id: 2 * i })}\n${JSON.stringify({ id: 2 * i + 1 })}`
      if (await post(first.url, body, agent) === 200) acked.push(2 * i, 2 * i + 1)
    }
    first.process.kill('SIGKILL')
    await first.exited
    agent.destroy()
    // What a power loss does to bytes that were written but never synced: they are gone.
    const [file] = await listFiles(join(dir, 'out'))
    const { truncate } = await import('node:fs/promises')
    await truncate(join(dir, 'out', file as string), 100)

    const second = await spawnServer(['--config', settings], dir)
    second.process.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(second.output()).toContain('replayed the commit log')
    const ids = (await readEvents(join(dir, 'out'))).map((e) => e.record.clientEvent.id)
    expect(ids).toEqual(acked)
  })

  it('with more partitions than descriptors, writes to files are deferred; a SIGKILL loses none of them', async () => {
    const dir = await tempDir()
    const settings = await settingsFile(dir, { commitLog: true, maxOpenFiles: 2 })
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent({ keepAlive: true })
    const acked: number[] = []
    for (let i = 0; i < 60; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${first.url}/events/t/rk${i % 12}`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        req.on('error', reject)
        req.end(JSON.stringify({ id: i }))
      })
      if (status === 200) acked.push(i)
    }
    first.process.kill('SIGKILL')
    await first.exited
    agent.destroy()
    // Most of these events were only in the commit log (and in memory) when the process died.
    const before = (await readEvents(join(dir, 'out'))).length
    expect(before).toBeLessThan(60)

    const second = await spawnServer(['--config', settings], dir)
    second.process.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    const ids = (await readEvents(join(dir, 'out'))).map((e) => e.record.clientEvent.id).sort((a, b) => a - b)
    expect(ids).toEqual(acked)
  })

  it('ignores a torn last record: it was never acknowledged', async () => {
    const { CommitLog } = await import('../plugins/files/commit-log.js')
    const dir = await tempDir()
    const log = new CommitLog(join(dir, 'log'), silent, Date.now)
    await log.start()
    await log.append([{ key: 'a/f.jsonl', offset: 0, data: [Buffer.from('one\n')] }])
    await log.append([{ key: 'a/f.jsonl', offset: 4, data: [Buffer.from('two\n')] }])
    await log.close()
    const [segment] = await readdir(join(dir, 'log'))
    const path = join(dir, 'log', segment as string)
    const whole = await readFile(path)
    await writeFile(path, whole.subarray(0, whole.length - 3))
    const seen: string[] = []
    const result = await new CommitLog(join(dir, 'log'), silent, Date.now).replay(async (key, offset, data) => { seen.push(`${key}@${offset}:${data.toString()}`) })
    expect(seen).toEqual(['a/f.jsonl@0:one\n'])
    expect(result).toEqual({ records: 1, torn: true })
  })
})
