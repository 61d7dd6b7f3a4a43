import { describe, expect, it } from 'vitest'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { Agent, request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import pino from 'pino'
import type { FastifyInstance } from 'fastify'
import type { Connection } from '../../core/connection.js'
import type { VerifyReport } from '../../core/destination.js'
import { verifyTrail } from '../../index.js'
import { encodeDigest, loadSigningKey, parseDigest } from '../../plugins/files/digest-record.js'
import { BIN, spawnServer } from '../child-server.js'
import { captureLogs, listFiles, start, tempDir } from '../helpers.js'
import { readParquet } from '../parquet-fixtures.js'

export interface TrailStore {
  /** Settings block of a connection whose keys all start with `prefix`, over a store shared by the tests. */
  connection(prefix: string, dir: string): Record<string, unknown>
  /** A connection (same class, same store) to read and tamper with what the server wrote. */
  reader(prefix: string, dir: string): Connection
}

export function keyPair (): { privatePem: string, publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() }
}

export async function readObject (connection: Connection, key: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of await connection.read(key)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export async function keysOf (connection: Connection, prefix = ''): Promise<string[]> {
  const keys: string[] = []
  for await (const { key } of connection.list(prefix)) keys.push(key)
  return keys.sort()
}

export async function verifyDocument (document: unknown, baseDir: string, extra: Record<string, unknown> = {}): Promise<VerifyReport> {
  const result = await verifyTrail({ document, baseDir, origin: 'test' }, { now: Date.now(), ...extra })
  expect(result.reports).toHaveLength(1)
  return result.reports[0] as VerifyReport
}

function post (url: string, path: string, body: string, agent: Agent): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(`${url}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve(0))
    req.end(body)
  })
}

/** Requests from `connections` clients in a loop until `stop()`; resolves with the ids acknowledged. */
function load (url: string, connections: number): { stop(): Promise<number[]> } {
  const agent = new Agent({ keepAlive: true })
  let running = true
  let next = 0
  const acked: number[] = []
  const clients = Array.from({ length: connections }, async () => {
    while (running) {
      const id = next++
      if (await post(url, `/events/t/r${id % 4}`, JSON.stringify({ id, pad: 'x'.repeat(200) }), agent) === 200) acked.push(id)
    }
  })
  return {
    async stop () {
      running = false
      await Promise.all(clients)
      agent.destroy()
      return acked
    }
  }
}

const kinds = (report: VerifyReport): string[] => report.problems.map((p) => `${p.kind} ${p.key}`)

/** What the trail covers: every format the files destination writes, each tampered with the same ways. */
interface Variant {
  label: string
  /** Data files' name ending. */
  extension: string
  destination: Record<string, unknown>
}

const VARIANTS: Variant[] = [
  { label: 'JSON lines', extension: '.jsonl', destination: {} },
  // zstd frames are small: smaller files, so that there are as many.
  { label: 'JSON lines, zstd', extension: '.jsonl.zst', destination: { compression: 'zstd', flushEveryBytes: 250 } },
  { label: 'Parquet', extension: '.parquet', destination: { format: 'parquet' } }
]

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** Ids of the events in the Parquet objects of a store, read by DuckDB from local copies. */
async function parquetIds (reader: Connection, dir: string): Promise<number[]> {
  const copies = join(dir, 'copies')
  await mkdir(copies, { recursive: true })
  const paths: string[] = []
  for (const key of (await keysOf(reader)).filter((k) => k.endsWith('.parquet'))) {
    const path = join(copies, `${paths.length}.parquet`)
    await writeFile(path, await readObject(reader, key))
    paths.push(path)
  }
  return (await readParquet(paths)).map((row) => (JSON.parse(row.clientEvent) as { id: number }).id)
}

/** Uploads everything sealed, then stops: a shutdown uploads for up to uploadShutdownGraceS (10 s by default). */
async function drainAndClose (app: FastifyInstance): Promise<void> {
  await app.close()
}

/**
 * The integrity trail on one backend, through the real server: an untouched trail verifies, each
 * kind of tampering is named by key, and crashes, reloads and shared stores keep it whole.
 */
export function describeIntegrity (name: string, store: TrailStore): void {
  describe(`integrity trail: ${name}`, () => {
    const prefix = (): string => `trail-${randomBytes(4).toString('hex')}/`

    async function setup (destination: Record<string, unknown> = {}) {
      const dir = await tempDir()
      const p = prefix()
      const keys = keyPair()
      await writeFile(join(dir, 'signing.pem'), keys.privatePem)
      const document = {
        server: { instanceId: 'test-1' },
        connections: { store: store.connection(p, dir) },
        destinations: [{
          name: 'all',
          connection: 'store',
          path: 'events',
          flushEveryBytes: 700,
          uploadRetryInitialS: 0.05,
          uploadRetryMaxS: 0.3,
          integrity: { enabled: true, signingKey: 'signing.pem' },
          ...destination
        }]
      }
      return { dir, p, keys, document, reader: store.reader(p, dir) }
    }

    for (const variant of VARIANTS) {
      it(`${variant.label}: an untouched trail verifies; altered, missing, added and swapped files, a cut tail, a changed record and another key are each named`, async () => {
        const { dir, keys, document, reader } = await setup(variant.destination)
        const numbered = new RegExp(`_(\\d{10})${escape(variant.extension)}$`)
        const { stream, logs } = captureLogs()
        const app = await start({ document, baseDir: dir, loggerInstance: pino({ level: 'info' }, stream) })
        for (let i = 0; i < 24; i++) {
          expect((await app.inject({ method: 'POST', url: `/events/t/r${i % 3}`, payload: [{ i, pad: 'x'.repeat(100) }, { i, j: 1 }] })).statusCode).toBe(200)
        }
        await drainAndClose(app)
        const heads = logs.lines.map((l) => JSON.parse(l) as { integrityHead?: { destination: string, instanceId: string, seq: number, hash: string } })
          .flatMap((l) => l.integrityHead !== undefined ? [l.integrityHead] : [])
        expect(heads.length).toBe(2) // the start and the clean stop
        const publicKeys = [keys.publicPem]

        const clean = await verifyDocument(document, dir, { publicKeys, knownHeads: heads })
        expect(clean.problems).toEqual([])
        expect(clean.open).toEqual([])
        expect(clean.summary).toMatchObject({ instances: 1, events: 48, signed: true })
        expect(clean.summary.files).toBeGreaterThan(6)

        const all = await keysOf(reader)
        const data = all.filter((k) => k.endsWith(variant.extension))
        const digests = all.filter((k) => k.includes('/.dss-integrity/'))
        expect(data.length).toBe(clean.summary.files)
        expect(digests.length).toBe(clean.summary.records)
        const original = new Map<string, Buffer>()
        for (const key of all) original.set(key, await readObject(reader, key))
        const restore = async (): Promise<void> => {
          for (const key of await keysOf(reader)) if (!original.has(key)) await reader.delete(key)
          for (const [key, body] of original) await reader.put(key, body)
          expect((await verifyDocument(document, dir, { publicKeys })).problems).toEqual([])
        }
        const [a, b, c, d] = data as [string, string, string, string]

        // One byte changed in one file.
        const changed = Buffer.from(original.get(a) as Buffer)
        changed[10] = (changed[10] as number) ^ 0x01
        await reader.put(a, changed)
        expect(kinds(await verifyDocument(document, dir, { publicKeys }))).toEqual([`altered ${a}`])
        await restore()

        // A file deleted.
        await reader.delete(b)
        expect(kinds(await verifyDocument(document, dir, { publicKeys }))).toEqual([`missing ${b}`])
        await restore()

        // Files added: one named like the server's, one not.
        const forged = a.replace(numbered, `_0000000999${variant.extension}`)
        await reader.put(forged, Buffer.from('{"clientEvent":{},"origAddress":"1.2.3.4","serverTimestamp":"2026-01-01T00:00:00.000+0000"}\n'))
        await reader.put('events/t/notes.txt', Buffer.from('hello\n'))
        expect(kinds(await verifyDocument(document, dir, { publicKeys })).sort()).toEqual([`unexpected ${forged}`, 'unexpected events/t/notes.txt'].sort())
        await restore()

        // Two files' contents swapped.
        await reader.put(c, original.get(d) as Buffer)
        await reader.put(d, original.get(c) as Buffer)
        expect(kinds(await verifyDocument(document, dir, { publicKeys })).sort()).toEqual([`altered ${c}`, `altered ${d}`].sort())
        await restore()

        // The newest data files removed.
        const newest = [...data].sort((x, y) => (numbered.exec(x)?.[1] ?? '').localeCompare(numbered.exec(y)?.[1] ?? '')).slice(-2)
        for (const key of newest) await reader.delete(key)
        expect(kinds(await verifyDocument(document, dir, { publicKeys })).sort()).toEqual(newest.map((k) => `missing ${k}`).sort())
        // ...and with them the newest records, as someone covering their tracks would: the logged
        // heads show the cut, and so does the missing clean stop once a head interval has passed.
        const lastDigests = digests.slice(-3)
        for (const key of lastDigests) await reader.delete(key)
        const cut = await verifyDocument(document, dir, { publicKeys, knownHeads: heads })
        expect(cut.problems.some((p) => p.kind === 'tail-cut' && p.message.includes('known from the logs'))).toBe(true)
        const later = await verifyDocument(document, dir, { publicKeys, now: Date.now() + 3 * 600_000 })
        expect(later.problems.some((p) => p.kind === 'tail-cut' && p.key === digests[digests.length - 4])).toBe(true)
        await restore()

        // One digest record changed: its signature fails, and the next record's link.
        const target = digests[3] as string
        const text = (original.get(target) as Buffer).toString()
        const edited = text.replace(/("at":"[^"]*)(\d)Z"/, (_m, head: string, digit: string) => `${head}${(Number(digit) + 1) % 10}Z"`)
        expect(edited).not.toBe(text)
        await reader.put(target, Buffer.from(edited))
        expect(kinds(await verifyDocument(document, dir, { publicKeys }))).toEqual([`chain-broken ${digests[4] as string}`, `bad-signature ${target}`])
        await restore()

        // A record signed with another key.
        const other = loadSigningKey(keyPair().privatePem).signer
        const resigned = encodeDigest(parseDigest(original.get(digests[2] as string) as Buffer).record, other).bytes
        await reader.put(digests[2] as string, resigned)
        const foreign = await verifyDocument(document, dir, { publicKeys })
        expect(kinds(foreign)).toEqual([`bad-signature ${digests[2] as string}`])
        expect(foreign.problems[0]?.message).toMatch(/signed with another key/)
        // Without the public key, signatures cannot be vouched for: that fails too.
        const unchecked = await verifyDocument({ ...document, destinations: [{ ...document.destinations[0], integrity: { enabled: true } }] }, dir)
        expect(unchecked.problems.map((p) => p.kind)).toEqual(['unchecked'])
        await restore()
      }, 120_000)
    }

    it('SIGKILL under load, then a restart: the trail verifies, and says what was recovered', async () => {
      const { dir, keys, document } = await setup({ flushEveryBytes: 20_000 })
      const settings = join(dir, 'settings.json')
      await writeFile(settings, JSON.stringify(document))
      const first = await spawnServer(['--config', settings], dir)
      const traffic = load(first.url, 8)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      first.process.kill('SIGKILL')
      await first.exited
      const acked = await traffic.stop()
      expect(acked.length).toBeGreaterThan(50)
      const second = await spawnServer(['--config', settings], dir)
      const more = load(second.url, 4)
      await new Promise((resolve) => setTimeout(resolve, 500))
      await more.stop()
      second.process.kill('SIGTERM')
      expect(await second.exited).toBe(0)
      // Uploads still queued at that shutdown stay in the spool: a third start ships them.
      const third = await spawnServer(['--config', settings], dir)
      const until = Date.now() + 30_000
      for (;;) {
        const stats = await fetch(`${third.url}/stats`).then(async (r) => await r.json() as { destinations: { all: { pendingBytes?: number } } })
        if ((stats.destinations.all.pendingBytes ?? 0) === 0) break
        if (Date.now() > until) throw new Error('the spool did not drain')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      third.process.kill('SIGTERM')
      expect(await third.exited).toBe(0)
      const report = await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })
      expect(report.problems).toEqual([])
      expect(report.open).toEqual([])
      expect(report.summary.events).toBeGreaterThanOrEqual(acked.length)
      expect(report.summary.notes.some((n) => n.includes('resumed after a crash'))).toBe(true)
    }, 90_000)

    it('Parquet: SIGKILL while a file is converted or uploaded, then a restart: every acknowledged event is there once, and the trail verifies', async () => {
      // A slow zstd level: conversions take long enough to be caught in the act.
      const { dir, keys, document, reader } = await setup({ format: 'parquet', flushEveryBytes: 150_000, zstdLevel: 19 })
      const settings = join(dir, 'settings.json')
      await writeFile(settings, JSON.stringify(document))
      const spool = join(dir, 'data', 'state', 'all', 'spool')
      const first = await spawnServer(['--config', settings], dir)
      const traffic = load(first.url, 8)
      // Converting (a .parquet.tmp), or converted and not yet placed or uploaded (a .parquet).
      const until = Date.now() + 60_000
      while (!(await listFiles(spool)).some((f) => f.endsWith('.parquet.tmp') || f.endsWith('.parquet'))) {
        if (Date.now() > until) throw new Error('no conversion seen')
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      first.process.kill('SIGKILL')
      expect(await first.exited).toBe('SIGKILL')
      const acked = await traffic.stop()
      expect(acked.length).toBeGreaterThan(100)
      const second = await spawnServer(['--config', settings], dir)
      const drained = Date.now() + 60_000
      for (;;) {
        const stats = await fetch(`${second.url}/stats`).then(async (r) => await r.json() as { destinations: { all: { pendingBytes?: number } } })
        if ((stats.destinations.all.pendingBytes ?? 0) === 0) break
        if (Date.now() > drained) throw new Error('the spool did not drain')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      second.process.kill('SIGTERM')
      expect(await second.exited).toBe(0)
      const report = await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })
      expect(report.problems).toEqual([])
      expect(report.open).toEqual([])
      expect(report.summary.notes.some((n) => n.includes('resumed after a crash'))).toBe(true)
      const ids = await parquetIds(reader, dir)
      const counts = new Map<number, number>()
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
      expect(acked.filter((id) => !counts.has(id))).toEqual([])
      expect([...counts].filter(([, n]) => n > 1)).toEqual([])
      expect(report.summary.events).toBe(ids.length)
      expect(await listFiles(spool)).toEqual([])
    }, 120_000)

    it('a reload keeps one chain; two instances on one store keep one chain each; verify passes on both, through the command line', async () => {
      const { dir, keys, document, reader } = await setup()
      const settings = join(dir, 'settings.json')
      await writeFile(settings, JSON.stringify(document))
      await writeFile(join(dir, 'public.pem'), keys.publicPem)
      const app = await start({ settingsFile: settings } as never)
      const other = await start({ document: { ...document, server: { instanceId: 'test-2', stateDir: './state-2' } }, baseDir: dir })
      for (let i = 0; i < 6; i++) {
        expect((await app.inject({ method: 'POST', url: `/events/t/r${i % 2}`, payload: { i, pad: 'y'.repeat(300) } })).statusCode).toBe(200)
        expect((await other.inject({ method: 'POST', url: `/events/t/r${i % 2}`, payload: { i, other: true } })).statusCode).toBe(200)
        if (i === 2) {
          await writeFile(settings, JSON.stringify({ ...document, destinations: [{ ...document.destinations[0], flushEveryBytes: 500 }] }))
          await app.eventServer.reload()
        }
      }
      await drainAndClose(app)
      await drainAndClose(other)
      const instances = new Set((await keysOf(reader, 'events/.dss-integrity/all/')).map((k) => k.split('/')[3]))
      expect([...instances].sort()).toEqual(['test-1', 'test-2'])
      const result = await promisify(execFile)(process.execPath, [BIN, 'verify', '--config', settings, '--public-key', join(dir, 'public.pem'), '--json'], { cwd: dir })
        .then(({ stdout }) => ({ code: 0, stdout }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout + err.stderr }))
      expect(result.code, result.stdout).toBe(0)
      const parsed = JSON.parse(result.stdout) as { ok: boolean, destinations: VerifyReport[] }
      expect(parsed.ok).toBe(true)
      expect(parsed.destinations[0]?.summary).toMatchObject({ instances: 2, events: 12 })
    }, 90_000)
  })
}
