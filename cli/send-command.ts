import { EVS_ERR_CLI_ARGUMENT } from '../core/errors.js'
import { parseDuration } from './parse-duration.js'
import { send, type SenderProgress, type SenderSummary } from './sender.js'

function bar (p: SenderProgress, total: number | undefined, durationS: number | undefined): string {
  const fraction = total !== undefined ? p.eventsSent / total : durationS !== undefined ? p.elapsedS / durationS : 0
  const width = 24
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)))
  const rate = p.elapsedS > 0 ? Math.round(p.eventsAcknowledged / p.elapsedS) : 0
  const rejected = Object.values(p.rejectedByStatus).reduce((a, b) => a + b, 0)
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.round(fraction * 100)}%  ${p.eventsSent} sent  ${p.eventsAcknowledged} acked  ${rate} ev/s  ${rejected} rejected  ${p.errors} errors`
}

function report (s: SenderSummary): string {
  const rejected = Object.entries(s.rejectedByStatus)
  return [
    `sent          ${s.eventsSent} events in ${s.requestsSent} requests over ${s.elapsedS.toFixed(2)} s`,
    `acknowledged  ${s.eventsAcknowledged} events (${Math.round(s.eventsPerSecond)} events/s)`,
    `rejected      ${rejected.length === 0 ? 'none' : rejected.map(([status, n]) => `${n} requests with ${status}`).join(', ')}`,
    `errors        ${s.errors}${s.lastError !== null ? ` (last: ${s.lastError})` : ''}`,
    `latency       p50 ${s.latencyMs.p50.toFixed(1)} ms, p99 ${s.latencyMs.p99.toFixed(1)} ms, max ${s.latencyMs.max.toFixed(1)} ms`
  ].join('\n') + '\n'
}

function positive (name: string, text: string | undefined, fallback: number, allowZero = false): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) throw new EVS_ERR_CLI_ARGUMENT(`--${name} expects a ${allowZero ? 'non-negative' : 'positive'} number, got "${text}"`)
  return value
}

const lastOf = (value: string | boolean | string[] | undefined): string => String(Array.isArray(value) ? value[value.length - 1] : value)

/** `dss-event-server send`: exit code 0 when every event sent was acknowledged. */
export async function sendCommand (values: Record<string, string | boolean | string[] | undefined>): Promise<number> {
  const url = values.url as string | undefined
  if (url === undefined) throw new EVS_ERR_CLI_ARGUMENT('send needs --url, e.g. --url http://localhost:11004')
  const durationS = values.duration === undefined ? undefined : parseDuration(values.duration as string)
  if (values.duration !== undefined && durationS === undefined) throw new EVS_ERR_CLI_ARGUMENT(`--duration expects e.g. 30s, 2m or 500ms, got "${String(values.duration)}"`)
  const count = values.count === undefined ? undefined : positive('count', values.count as string, 0)
  const options = {
    url,
    rate: positive('rate', values.rate as string | undefined, 0, true),
    batch: positive('batch', values.batch as string | undefined, 1),
    concurrency: positive('concurrency', values.concurrency as string | undefined, 8),
    ...(count !== undefined ? { count } : {}),
    ...(durationS !== undefined ? { durationS } : {}),
    ...(values.key !== undefined ? { key: values.key as string } : {}),
    ...(values.topic !== undefined ? { topic: lastOf(values.topic) } : {}),
    ...(values['routing-key'] !== undefined ? { routingKey: lastOf(values['routing-key']) } : {}),
    insecure: values.insecure === true
  }
  const tty = process.stderr.isTTY
  const total = count ?? (durationS === undefined ? 1000 : undefined)
  const summary = await send(options, tty ? (p) => process.stderr.write(`\r${bar(p, total, durationS)}`) : undefined)
  if (tty) process.stderr.write('\n')
  process.stdout.write(report(summary))
  return summary.eventsAcknowledged === summary.eventsSent ? 0 : 1
}
