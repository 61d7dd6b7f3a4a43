import { EVS_ERR_QUERY_INVALID } from './errors.js'
import { wallTime, wallToInstant, ZonedTime } from './time.js'

const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,3})\d*)?)?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i
const RELATIVE = /^(?:now\s*)?-\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A time bound of a query: an ISO-8601 date or date-time (`2026-11-25`, `2026-11-25T14:00`,
 * `2026-11-25 14:00:30.5`), in `timeZone` unless it carries `Z` or an offset; `now`, `today`,
 * `yesterday` (midnight in `timeZone`); or a time before now such as `now-90m`, `now-2h`, `-7d`.
 */
export function parseTimeBound (text: string, timeZone: string, now: number, option: string): number {
  const value = text.trim()
  const zone = new ZonedTime(timeZone)
  if (value === 'now') return now
  if (value === 'today' || value === 'yesterday') {
    const wall = wallTime(zone, now)
    const midnight = wall - (((wall % 86_400_000) + 86_400_000) % 86_400_000)
    return wallToInstant(zone, midnight - (value === 'yesterday' ? 86_400_000 : 0))
  }
  const relative = RELATIVE.exec(value)
  if (relative !== null) return now - Number(relative[1]) * (UNIT_MS[relative[2] as string] as number)
  const m = ISO.exec(value)
  if (m === null) {
    throw new EVS_ERR_QUERY_INVALID(`${option} expects a date or date-time such as 2026-11-25, 2026-11-25T14:00 or 2026-11-25T14:00:00+01:00, or now, today, yesterday, now-2h, now-7d; got "${text}"`)
  }
  const [year, month, day, hour, minute, second] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i] ?? 0)) as [number, number, number, number, number, number]
  const ms = Number((m[7] ?? '0').padEnd(3, '0'))
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) {
    throw new EVS_ERR_QUERY_INVALID(`${option}: "${text}" is not a valid date-time`)
  }
  const wall = Date.UTC(year, month - 1, day, hour, minute, second, ms)
  if (new Date(wall).getUTCDate() !== day) throw new EVS_ERR_QUERY_INVALID(`${option}: "${text}" is not a valid date (no such day in that month)`)
  const offset = m[8]
  if (offset === undefined) return wallToInstant(zone, wall)
  if (offset.toUpperCase() === 'Z') return wall
  const digits = offset.slice(1).replace(':', '')
  const minutes = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || '0')
  return wall - (offset[0] === '-' ? -1 : 1) * minutes * 60_000
}
