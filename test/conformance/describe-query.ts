import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Connection } from '../../core/connection.js'
import { newQueryStats, type QueryProblem, type StoredEvent } from '../../core/destination.js'
import { queryEvents, type QueryEventsOptions } from '../../index.js'
import { expected, HOUR, instanceOptions, ROUTING_KEYS, T0, timeRanges, trailEvents, WHERE_CASES, writeTrail, type Filters, type SentEvent, type TrailWriter } from '../query-trail.js'

export interface QueryBackend {
  /** Settings block of a connection whose keys all start with `prefix`. */
  connection(prefix: string): Record<string, unknown>
  /** Wraps the query's connection, e.g. to work around a limit of the emulator (say which, and why). */
  wrapConnection?: (connection: Connection) => Connection
}

const sorted = (list: number[]): number[] => [...list].sort((a, b) => a - b)

/**
 * Reading back through each backend: a trail written by real servers (plain, gzip, zstd and Parquet
 * files, five instances) is queried with every combination of time range, topics and routing keys, each with
 * field filters in turn, and each answer is compared with a brute-force reference.
 */
export function describeQuery (name: string, backend: QueryBackend): void {
  describe(`query: ${name}`, () => {
    let dir: string
    let writer: TrailWriter
    let events: SentEvent[]

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'evs-query-store-'))
      const prefix = `q-${randomBytes(4).toString('hex')}/`
      writer = {
        baseDir: dir,
        document: (extra = {}) => ({
          server: { instanceId: extra.instanceId ?? 'reader', stateDir: extra.stateDir ?? './state', trustedProxies: ['127.0.0.1'] },
          connections: { store: backend.connection(prefix) },
          destinations: [{ name: 'audit', connection: 'store', path: 'audit', ...instanceOptions(extra), uploadRetryInitialS: 0.05, uploadRetryMaxS: 0.5, uploadShutdownGraceS: 120 }]
        })
      }
      events = trailEvents(12, 5)
      // Object stores only show sealed, uploaded files: every server is closed.
      await (await writeTrail(writer, events, false)).close()
    }, 180_000)

    afterAll(async () => {
      await rm(dir, { recursive: true, force: true })
    })

    const base = (): QueryEventsOptions => ({ document: writer.document(), baseDir: dir, ...(backend.wrapConnection !== undefined ? { wrapConnection: backend.wrapConnection } : {}) })
    const ids = async (options: QueryEventsOptions): Promise<number[]> => {
      const out: number[] = []
      for await (const event of queryEvents({ ...base(), ...options })) out.push((event.record.clientEvent as { id: number }).id)
      return out
    }

    it('returns every event once, from plain, gzip, zstd and Parquet objects of five instances', async () => {
      const stats = newQueryStats()
      const problems: QueryProblem[] = []
      expect(sorted(await ids({ stats, onProblem: (p) => problems.push(p) }))).toEqual(expected(events, {}))
      expect(problems).toEqual([])
      expect(stats.filesUnreadable + stats.linesCorrupt + stats.filesPartial).toBe(0)
    })

    it('every time range, topic set and routing-key set, with field filters in turn, returns exactly the expected events', async () => {
      const topicSets: Array<string[] | undefined> = [undefined, ['apinode-query'], ['generic', 'authfail']]
      const rkSets: Array<string[] | undefined> = [undefined, ['rk/svc 2'], ROUTING_KEYS]
      const whereSets = [[], ...WHERE_CASES.map((w) => [w])]
      let n = 0
      for (const range of timeRanges(events)) {
        for (const topics of topicSets) {
          for (const routingKeys of rkSets) {
            const where = whereSets[n++ % whereSets.length] as typeof WHERE_CASES
            const filters: Filters = { ...range, ...(topics !== undefined ? { topics } : {}), ...(routingKeys !== undefined ? { routingKeys } : {}) }
            const found = await ids({ ...filters, where: where.map((w) => w.expression) })
            expect(sorted(found), JSON.stringify({ filters, where: where.map((w) => w.expression) })).toEqual(expected(events, filters, where))
          }
        }
      }
      for (const where of whereSets.slice(1)) {
        expect(sorted(await ids({ where: where.map((w) => w.expression), users: ['admin', 'marie.curie'] }))).toEqual(expected(events, { users: ['admin', 'marie.curie'] }, where))
      }
    }, 300_000)

    it('--order time merges objects of every instance into one sorted stream; --limit keeps the earliest', async () => {
      const found: StoredEvent[] = []
      for await (const event of queryEvents({ ...base(), order: 'time', from: T0 + 4 * HOUR })) found.push(event)
      const times = found.map((e) => e.time)
      expect(times).toEqual([...times].sort((a, b) => a - b))
      expect(sorted(found.map((e) => (e.record.clientEvent as { id: number }).id))).toEqual(expected(events, { from: T0 + 4 * HOUR }))
      expect(await ids({ order: 'time', limit: 4 })).toEqual(events.slice(0, 4).map((e) => e.id))
    })

    it('a one-hour query opens only the objects of that hour', async () => {
      const stats = newQueryStats()
      const from = T0 + 7 * HOUR
      const found = await ids({ from, to: from + HOUR, stats })
      expect(sorted(found)).toEqual(expected(events, { from, to: from + HOUR }))
      const hourFiles = new Set(events.filter((e) => e.time >= from && e.time < from + HOUR).map((e) => `${e.topic}|${e.routingKey}`))
      // One object per folder and instance writing it in that hour (the second half has four instances).
      expect(stats.filesOpened).toBeGreaterThanOrEqual(hourFiles.size)
      expect(stats.filesOpened).toBeLessThanOrEqual(hourFiles.size * 4)
      expect(stats.filesListed).toBe(stats.filesOpened)
    })
  })
}
