import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { randomBytes } from 'node:crypto'

const REQUEST_TIMEOUT_MS = 30_000

export interface SenderOptions {
  /** Base URL of the event server, as a DSS node's target has it (no path), or with `/events...`. */
  url: string
  key?: string
  topic?: string
  routingKey?: string
  /** Events per second; 0: as fast as the server answers. */
  rate: number
  /** Events to send; with neither count nor durationS, 1000. */
  count?: number
  durationS?: number
  /** Events per request (a JSON array when more than one). */
  batch: number
  /** Requests in flight at once. */
  concurrency: number
  /** Accept self-signed certificates, as DSS's trustAllSSLCertificates. */
  insecure?: boolean
}

export interface SenderProgress {
  elapsedS: number
  eventsSent: number
  eventsAcknowledged: number
  requestsSent: number
  /** Refused requests by HTTP status. */
  rejectedByStatus: Record<string, number>
  /** Requests that got no answer (connection refused, reset...). */
  errors: number
  lastError: string | null
}

export interface SenderSummary extends SenderProgress {
  eventsPerSecond: number
  latencyMs: { p50: number, p99: number, max: number }
}

const MESSAGE_TYPES = ['application-open', 'dataset-read-data', 'project-save', 'scenario-run', 'api-query', 'login', 'flow-job-done']
const USERS = ['admin', 'data.scientist', 'analyst-42', 'svc-automation', 'marie.curie']
const TOPICS = ['generic', 'generic', 'generic', 'apinode-query', 'authfail', 'compute-resource-usage']

/** A DSS-shaped audit message of about 600 bytes. */
export function auditEvent (n: number, topic?: string, routingKey?: string): Record<string, unknown> {
  const user = USERS[n % USERS.length] as string
  const t = topic ?? TOPICS[n % TOPICS.length] as string
  return {
    topic: t,
    routingKey: routingKey ?? (t === 'apinode-query' ? `rk-svc-${n % 3}` : 'dss-node-1'),
    msgType: MESSAGE_TYPES[n % MESSAGE_TYPES.length],
    authUser: user,
    authSource: 'USER_FROM_UI',
    authVia: ['SESSION_COOKIE'],
    clientIP: `10.0.${n % 7}.${n % 250}`,
    originalIP: `10.0.${n % 7}.${n % 250}`,
    xForwardedFor: [],
    callPath: ['/dip/api/projects/get-summary', 'com.dataiku.dip.server.controllers.ProjectsController.getSummary'],
    projectKey: `PROJECT_${n % 11}`,
    sessionId: randomBytes(8).toString('hex'),
    seq: n,
    details: { description: 'synthetic event sent by dss-event-server send', durationMs: n % 977, outcome: n % 50 === 0 ? 'FAILURE' : 'SUCCESS' }
  }
}

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number
}

function eventsUrl (base: string): URL {
  const url = new URL(base)
  if (!url.pathname.startsWith('/events')) url.pathname = `${url.pathname.replace(/\/+$/, '')}/events`
  return url
}

/** Sends synthetic DSS audit events and measures what the server acknowledged. */
export async function send (options: SenderOptions, onProgress?: (progress: SenderProgress) => void, signal?: AbortSignal): Promise<SenderSummary> {
  const url = eventsUrl(options.url)
  const https = url.protocol === 'https:'
  const agent = https
    ? new HttpsAgent({ keepAlive: true, maxSockets: options.concurrency, rejectUnauthorized: options.insecure !== true })
    : new HttpAgent({ keepAlive: true, maxSockets: options.concurrency })
  const request = https ? httpsRequest : httpRequest
  const total = options.count ?? (options.durationS === undefined ? 1000 : Number.POSITIVE_INFINITY)
  const started = performance.now()
  const deadline = options.durationS === undefined ? Number.POSITIVE_INFINITY : started + options.durationS * 1000
  const latencies: number[] = []
  const progress: SenderProgress = { elapsedS: 0, eventsSent: 0, eventsAcknowledged: 0, requestsSent: 0, rejectedByStatus: {}, errors: 0, lastError: null }
  let next = 0

  const post = async (body: string): Promise<number> => await new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }
    if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`
    const req = request(url, { method: 'POST', agent, headers }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', reject)
    })
    req.on('error', reject)
    // A server that takes the request and never answers counts as an error, not a hang.
    req.setTimeout(REQUEST_TIMEOUT_MS, () => { req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)) })
    req.end(body)
  })

  const worker = async (): Promise<void> => {
    while (signal?.aborted !== true) {
      const now = performance.now()
      if (next >= total || now >= deadline) return
      const size = Math.min(options.batch, total - next)
      const first = next
      next += size
      if (options.rate > 0) {
        // Paced: this batch leaves no earlier than its place in the schedule.
        const due = started + (first / options.rate) * 1000
        if (due > now) await new Promise((resolve) => setTimeout(resolve, due - now))
        if (performance.now() >= deadline) return
      }
      const events = Array.from({ length: size }, (_, i) => auditEvent(first + i, options.topic, options.routingKey))
      const body = JSON.stringify(size === 1 ? events[0] : events)
      const sentAt = performance.now()
      progress.eventsSent += size
      progress.requestsSent++
      try {
        const status = await post(body)
        latencies.push(performance.now() - sentAt)
        if (status >= 200 && status < 300) progress.eventsAcknowledged += size
        else progress.rejectedByStatus[status] = (progress.rejectedByStatus[status] ?? 0) + 1
      } catch (err) {
        progress.errors++
        progress.lastError = (err as Error).message
      }
    }
  }

  const ticker = onProgress === undefined
    ? undefined
    : setInterval(() => onProgress({ ...progress, elapsedS: (performance.now() - started) / 1000 }), 250)
  try {
    await Promise.all(Array.from({ length: options.concurrency }, async () => await worker()))
  } finally {
    if (ticker !== undefined) clearInterval(ticker)
    agent.destroy()
  }
  const elapsedS = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const summary: SenderSummary = {
    ...progress,
    elapsedS,
    eventsPerSecond: elapsedS > 0 ? progress.eventsAcknowledged / elapsedS : 0,
    latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? 0 }
  }
  onProgress?.(summary)
  return summary
}
