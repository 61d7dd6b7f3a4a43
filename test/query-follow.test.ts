import { describe, expect, it } from 'vitest'
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { newQueryStats, type QueryStats, type StoredEvent } from '../core/destination.js'
import { queryEvents } from '../index.js'
import { compressLines } from '../plugins/files/compression.js'
import { onCleanup, start, tempDir } from './helpers.js'

/** The safety poll of these tests: far longer than any wait below, so only a watched change can start a round. */
const POLL_MS = 60_000
/** Generous: what arrives at all, arrives long before; what waits for the poll never does. */
const TIMEOUT_MS = 30_000

const watchers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'FSEventWrap').length
const delay = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function eventually (check: () => boolean, what: string): Promise<void> {
  const until = Date.now() + TIMEOUT_MS
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await delay(20)
  }
}

/** Until the follower has gone a while without listing: it then waits for a watched change (or the poll, a minute away). */
async function quiet (stats: QueryStats): Promise<void> {
  let calls = -1
  while (calls !== stats.listCalls) {
    calls = stats.listCalls
    await delay(500)
  }
}

async function setup (compression: string): Promise<{ dir: string, document: Record<string, unknown>, app: FastifyInstance, post: (topic: string, body: unknown) => Promise<void> }> {
  const dir = await tempDir()
  onCleanup(async () => await rm(dir, { recursive: true, force: true }))
  const document = { server: { instanceId: 'live' }, connections: { store: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'store', path: 'audit', compression }] }
  const app = await start({ document, baseDir: dir })
  const post = async (topic: string, body: unknown): Promise<void> => {
    expect((await app.inject({ method: 'POST', url: `/events/${topic}/node-1`, payload: body as Record<string, unknown> })).statusCode).toBe(200)
  }
  return { dir, document, app, post }
}

describe('query --follow on the filesystem', () => {
  it('sees events written after it started as they are written, by watching the files and folders, with the poll a minute away', async () => {
    const { dir, document, post } = await setup('zstd')
    await post('generic', { id: -1 })
    const before = watchers()
    const stats = newQueryStats()
    const controller = new AbortController()
    const seen: number[] = []
    const reading = (async () => {
      for await (const event of queryEvents({ document, baseDir: dir, follow: { intervalMs: POLL_MS }, signal: controller.signal, stats })) {
        seen.push((event.record.clientEvent as { id: number }).id)
      }
    })()
    try {
      await eventually(() => watchers() > before, 'the watches')
      await quiet(stats)
      const rounds = stats.listCalls
      // Appended to the file being read (a new zstd frame)...
      await post('generic', { id: 1 })
      await eventually(() => seen.includes(1), 'an event appended to a followed file')
      expect(stats.listCalls).toBeGreaterThan(rounds)
      await quiet(stats)
      // ...and in a topic folder that did not exist.
      await post('authfail', [{ id: 2 }, { id: 3 }])
      await eventually(() => seen.includes(3), 'an event in a new folder')
      await quiet(stats)
      await post('generic', { id: 4 })
      await eventually(() => seen.includes(4), 'a later event')
      expect(seen).toEqual([1, 2, 3, 4])
    } finally {
      controller.abort()
      await reading
    }
    // Ctrl-C (abort): every watch is closed.
    await eventually(() => watchers() === before, 'the watches to close')
  }, 4 * TIMEOUT_MS)

  it('reads a zstd frame cut at the end of a file once it is whole, from where it stopped', async () => {
    const dir = await tempDir()
    const now = Date.now()
    const hour = new Date(now).toISOString().slice(0, 13).replace(/[-T]/g, '/')
    const folder = join(dir, 'out', 'audit', 'generic', 'n1', hour)
    await mkdir(folder, { recursive: true })
    const line = (id: number): Buffer => Buffer.from(`{"clientEvent":{"id":${id},"pad":"${'y'.repeat(id * 100)}"},"origAddress":"10.0.0.1","serverTimestamp":"${new Date(now).toISOString().replace('Z', '+0000')}"}\n`)
    const [a, b, c] = await Promise.all([1, 2, 3].map(async (id) => await compressLines('zstd', [line(id)]))) as [Buffer, Buffer, Buffer]
    const file = join(folder, 'x_audit_0000000001.jsonl.zst')
    await writeFile(file, Buffer.concat([a, b.subarray(0, 10)]))
    const document = { server: { timeZone: 'UTC' }, connections: { store: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'store', path: 'audit' }] }
    const controller = new AbortController()
    const seen: number[] = []
    const stats = newQueryStats()
    const reading = (async () => {
      for await (const event of queryEvents({ document, baseDir: dir, from: now - 60_000, follow: { intervalMs: POLL_MS }, signal: controller.signal, stats })) {
        seen.push((event.record.clientEvent as { id: number }).id)
      }
    })()
    try {
      await eventually(() => seen.includes(1), 'the whole frame')
      expect(stats.filesPartial).toBeGreaterThan(0)
      await appendFile(file, b.subarray(10))
      await eventually(() => seen.includes(2), 'the frame made whole')
      await appendFile(file, c)
      await eventually(() => seen.includes(3), 'the next frame')
      expect(seen).toEqual([1, 2, 3])
    } finally {
      controller.abort()
      await reading
    }
  }, 4 * TIMEOUT_MS)

  it('closes its watches when it ends (--limit) and when its consumer fails', async () => {
    const { dir, document, post } = await setup('none')
    await post('generic', { id: -1 })
    const before = watchers()

    // Ends: the limit is reached.
    const limited: StoredEvent[] = []
    const ending = (async () => {
      for await (const event of queryEvents({ document, baseDir: dir, follow: { intervalMs: POLL_MS }, limit: 1 })) limited.push(event)
    })()
    await eventually(() => watchers() > before, 'the watches')
    await post('generic', { id: 1 })
    await ending
    expect(limited.map((e) => (e.record.clientEvent as { id: number }).id)).toEqual([1])
    await eventually(() => watchers() === before, 'the watches to close after the limit')

    // Fails: the consumer throws while the query follows.
    const failing = (async () => {
      for await (const event of queryEvents({ document, baseDir: dir, follow: { intervalMs: POLL_MS } })) {
        const id = (event.record.clientEvent as { id: number }).id
        if (id === 2) throw new Error(`consumer failed on ${id}`)
      }
    })()
    await eventually(() => watchers() > before, 'the watches')
    await post('generic', { id: 2 })
    await expect(failing).rejects.toThrow('consumer failed on 2')
    await eventually(() => watchers() === before, 'the watches to close after a failure')
  }, 4 * TIMEOUT_MS)
})
