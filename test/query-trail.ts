import { expect } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { buildServer } from '../index.js'

/** One event of a test trail, as the brute-force reference sees it. */
export interface SentEvent {
  id: number
  time: number
  topic: string
  routingKey: string
  authUser: string
  msgType: string
  projectKey: string
  address: string
  /** Topic and routing key travel in the body (else in the URL path only). */
  inBody: boolean
}

export const T0 = Date.UTC(2026, 10, 24, 20, 0, 0)
export const HOUR = 3_600_000
export const TOPICS = ['generic', 'apinode-query', 'authfail']
export const ROUTING_KEYS = ['dss-node-1', 'rk/svc 2']
export const USERS = ['admin', 'data.scientist', 'marie.curie', 'analyst-é']
export const MSG_TYPES = ['login', 'project-delete', 'dataset-read-data', 'api-query']
export const PROJECTS = ['CHURN', 'SALES', 'PROJECT_1']
export const ADDRESSES = ['10.0.0.1', '10.0.0.2', '10.0.0.3']

/** A deterministic trail of `hours` hours from T0, a few events an hour at odd milliseconds. */
export function trailEvents (hours = 30, perHour = 7): SentEvent[] {
  const events: SentEvent[] = []
  let id = 0
  for (let h = 0; h < hours; h++) {
    for (let k = 0; k < perHour; k++) {
      const n = id
      events.push({
        id: id++,
        // Spread within the hour, with two events on the same millisecond now and then.
        time: T0 + h * HOUR + Math.floor((k * HOUR) / perHour) + (n % 5 === 0 ? 0 : (n * 7919) % 997),
        topic: TOPICS[(n + h) % TOPICS.length] as string,
        routingKey: ROUTING_KEYS[(n >> 1) % ROUTING_KEYS.length] as string,
        authUser: USERS[(n * 3) % USERS.length] as string,
        msgType: MSG_TYPES[(n * 5 + h) % MSG_TYPES.length] as string,
        projectKey: PROJECTS[(n * 7) % PROJECTS.length] as string,
        address: ADDRESSES[n % ADDRESSES.length] as string,
        inBody: n % 4 !== 1
      })
    }
  }
  return events.sort((a, b) => a.time - b.time || a.id - b.id)
}

/**
 * The event's body, as raw JSON text: some spell a value with escapes (`\u0043HURN`), some hold an
 * escaped quote around a project key in another field, to exercise the readers' byte pre-checks.
 */
export function body (e: SentEvent): string {
  const project = e.id % 9 === 4 ? JSON.stringify(e.projectKey).replace(/^"(.)/, (_, c: string) => `"\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : JSON.stringify(e.projectKey)
  const fields = [
    `"id":${e.id}`,
    ...(e.inBody ? [`"topic":${JSON.stringify(e.topic)}`, `"routingKey":${JSON.stringify(e.routingKey)}`] : []),
    `"msgType":${JSON.stringify(e.msgType)}`,
    `"authUser":${JSON.stringify(e.authUser)}`,
    `"projectKey":${project}`,
    `"details":{"note":${JSON.stringify(e.id % 6 === 0 ? 'said "CHURN" twice \\ ok' : 'plain')},"n":${e.id % 13}}`
  ]
  return `{${fields.join(',')}}`
}

/** What one writing instance of a trail is: its id, state folder, and the files it writes. */
export interface TrailInstance {
  instanceId?: string
  stateDir?: string
  compression?: 'none' | 'gzip' | 'zstd'
  format?: 'jsonl' | 'parquet'
}

export interface TrailWriter {
  /** Settings document for servers and queries over this trail. */
  document(extra?: TrailInstance): Record<string, unknown>
  readonly baseDir: string
}

/** The destination options of a trail instance (the reader's own document leaves them out). */
export function instanceOptions (extra: TrailInstance = {}): Record<string, unknown> {
  return extra.format === 'parquet' ? { format: 'parquet' } : { compression: extra.compression ?? 'none' }
}

async function post (app: FastifyInstance, e: SentEvent): Promise<void> {
  const res = await app.inject({
    method: 'POST',
    url: `/events/${encodeURIComponent(e.topic)}/${encodeURIComponent(e.routingKey)}`,
    headers: { 'content-type': 'application/json', 'x-forwarded-for': e.address },
    payload: body(e)
  })
  expect(res.statusCode, res.body).toBe(200)
}

/**
 * Writes `events` through real servers: the first half by instance `q-1` (plain `.jsonl`), closed;
 * the second half in turn by `q-2` (gzip), `q-3` (plain), `q-4` (zstd) and `q-5` (Parquet). `q-5`
 * is closed at the end (a Parquet file exists once its spool file is sealed and converted); the
 * others are left open when `keepOpen` (their files are then still being written; call `close`),
 * else closed.
 */
export async function writeTrail (writer: TrailWriter, events: SentEvent[], keepOpen: boolean): Promise<{ close: () => Promise<void> }> {
  const clock = { t: T0 }
  const open = async (instance: TrailInstance & { instanceId: string }): Promise<FastifyInstance> =>
    await buildServer({ document: writer.document({ ...instance, stateDir: `./state-${instance.instanceId}` }), baseDir: writer.baseDir, logger: false, now: () => clock.t })
  const half = Math.floor(events.length / 2)
  const first = await open({ instanceId: 'q-1', compression: 'none' })
  try {
    for (const e of events.slice(0, half)) {
      clock.t = e.time
      await post(first, e)
    }
  } finally {
    // Closing seals every file and, on an object store, uploads it within uploadShutdownGraceS.
    await first.close()
  }
  const open2 = [
    await open({ instanceId: 'q-2', compression: 'gzip' }),
    await open({ instanceId: 'q-3', compression: 'none' }),
    await open({ instanceId: 'q-4', compression: 'zstd' })
  ]
  const parquet = await open({ instanceId: 'q-5', format: 'parquet' })
  const close = async (): Promise<void> => {
    for (const app of open2) await app.close()
  }
  try {
    for (const [i, e] of events.slice(half).entries()) {
      clock.t = e.time
      await post(i % 4 === 3 ? parquet : open2[i % 4] as FastifyInstance, e)
    }
  } finally {
    await parquet.close()
  }
  if (!keepOpen) await close()
  return { close }
}

export interface Filters {
  from?: number
  to?: number
  topics?: string[]
  routingKeys?: string[]
  users?: string[]
  msgTypes?: string[]
  addresses?: string[]
  where?: string[]
}

/** A `--where` expression with its brute-force meaning. */
export interface WhereCase { expression: string, test: (e: SentEvent) => boolean }

export const WHERE_CASES: WhereCase[] = [
  { expression: 'clientEvent.projectKey=CHURN', test: (e) => e.projectKey === 'CHURN' },
  { expression: 'projectKey!=SALES', test: (e) => e.projectKey !== 'SALES' },
  { expression: 'authUser~curie', test: (e) => e.authUser.includes('curie') },
  { expression: 'clientEvent.authUser~/^DATA\\./i', test: (e) => /^data\./i.test(e.authUser) },
  { expression: 'msgType=project-delete', test: (e) => e.msgType === 'project-delete' },
  { expression: 'origAddress=10.0.0.2', test: (e) => e.address === '10.0.0.2' },
  { expression: 'clientEvent.details.n=3', test: (e) => e.id % 13 === 3 },
  { expression: 'authUser=analyst-é', test: (e) => e.authUser === 'analyst-é' },
  { expression: 'routingKey=rk/svc 2', test: (e) => e.routingKey === 'rk/svc 2' },
  { expression: 'topic~auth', test: (e) => e.topic.includes('auth') }
]

/** The ids a query with these filters must return, worked out from what was sent. */
export function expected (events: SentEvent[], f: Filters, where: WhereCase[] = []): number[] {
  return events.filter((e) =>
    (f.from === undefined || e.time >= f.from) &&
    (f.to === undefined || e.time < f.to) &&
    (f.topics === undefined || f.topics.includes(e.topic)) &&
    (f.routingKeys === undefined || f.routingKeys.includes(e.routingKey)) &&
    (f.users === undefined || f.users.includes(e.authUser)) &&
    (f.msgTypes === undefined || f.msgTypes.includes(e.msgType)) &&
    (f.addresses === undefined || f.addresses.includes(e.address)) &&
    where.every((w) => w.test(e))
  ).map((e) => e.id).sort((a, b) => a - b)
}

/** Time ranges that cut partitions at odd places, with bounds on events' exact milliseconds. */
export function timeRanges (events: SentEvent[]): Array<{ from?: number, to?: number }> {
  const at = (i: number): number => (events[Math.min(events.length - 1, i)] as SentEvent).time
  return [
    {},
    { from: T0 + 3 * HOUR, to: T0 + 5 * HOUR },
    { from: at(17), to: at(150) },
    { from: T0 + 26 * HOUR + 1 },
    { to: at(40) + 1 }
  ]
}
