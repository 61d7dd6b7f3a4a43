export interface TimeParts {
  readonly year: string
  readonly month: string
  readonly day: string
  readonly hour: string
  readonly minute: string
  /** Numeric offset from UTC, `+HHMM` or `-HHMM`. */
  readonly offset: string
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`)
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`)

function formatOffset (minutes: number): string {
  const sign = minutes < 0 ? '-' : '+'
  const abs = Math.abs(minutes)
  return `${sign}${pad2(Math.floor(abs / 60))}${pad2(abs % 60)}`
}

/**
 * Calendar parts of instants in one time zone. Zone offsets are whole minutes, so parts are computed
 * once per minute (Intl is slow) and seconds/milliseconds are added from the instant itself.
 */
export class ZonedTime {
  readonly timeZone: string
  readonly #utc: boolean
  readonly #format: Intl.DateTimeFormat | undefined
  #cachedMinute = Number.NaN
  #cached: TimeParts | undefined

  constructor (timeZone: string) {
    this.timeZone = timeZone
    this.#utc = timeZone === 'UTC' || timeZone === 'Etc/UTC'
    this.#format = this.#utc
      ? undefined
      : new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit'
      })
  }

  parts (ms: number): TimeParts {
    const minute = Math.floor(ms / 60000)
    if (minute === this.#cachedMinute && this.#cached !== undefined) return this.#cached
    const parts = this.#compute(minute * 60000)
    this.#cachedMinute = minute
    this.#cached = parts
    return parts
  }

  /** ISO-8601 with milliseconds and a numeric offset, as the DSS Event Server writes `serverTimestamp`. */
  timestamp (ms: number): string {
    const p = this.parts(ms)
    const withinMinute = ((ms % 60000) + 60000) % 60000
    const seconds = Math.floor(withinMinute / 1000)
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${pad2(seconds)}.${pad3(withinMinute % 1000)}${p.offset}`
  }

  #compute (minuteStart: number): TimeParts {
    if (this.#format === undefined) {
      const d = new Date(minuteStart)
      return {
        year: String(d.getUTCFullYear()).padStart(4, '0'),
        month: pad2(d.getUTCMonth() + 1),
        day: pad2(d.getUTCDate()),
        hour: pad2(d.getUTCHours()),
        minute: pad2(d.getUTCMinutes()),
        offset: '+0000'
      }
    }
    const found: Record<string, string> = {}
    for (const part of this.#format.formatToParts(minuteStart)) found[part.type] = part.value
    const year = Number(found.year)
    const month = Number(found.month)
    const day = Number(found.day)
    const hour = Number(found.hour)
    const minute = Number(found.minute)
    const offsetMinutes = Math.round((Date.UTC(year, month - 1, day, hour, minute) - minuteStart) / 60000)
    return {
      year: String(year).padStart(4, '0'),
      month: pad2(month),
      day: pad2(day),
      hour: pad2(hour),
      minute: pad2(minute),
      offset: formatOffset(offsetMinutes)
    }
  }
}

/** The wall-clock time of an instant in `zone`, as milliseconds of a UTC date with the same fields. */
export function wallTime (zone: ZonedTime, ms: number): number {
  const p = zone.parts(ms)
  const withinMinute = ((ms % 60000) + 60000) % 60000
  return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute)) + withinMinute
}

const DAY_MS = 86_400_000

/**
 * The first instant whose wall-clock time in `zone` is `wall` (ms of a UTC date with the wanted
 * fields). A wall time that occurs twice (clocks set back) gives its first occurrence; one that
 * never occurs (clocks set forward) gives the instant of the jump.
 */
export function wallToInstant (zone: ZonedTime, wall: number): number {
  if (zone.timeZone === 'UTC' || zone.timeZone === 'Etc/UTC') return wall
  const offsets = new Set([wall - DAY_MS, wall, wall + DAY_MS].map((t) => wallTime(zone, t) - t))
  let found: number | undefined
  let latest = -Infinity
  for (const offset of offsets) {
    const t = wall - offset
    latest = Math.max(latest, t)
    if (wallTime(zone, t) === wall && (found === undefined || t < found)) found = t
  }
  return found ?? latest
}

/**
 * `serverTimestamp` as the server writes it, `2026-11-26T02:47:43.123+0000`, in milliseconds;
 * NaN when it is not in that form.
 */
export function parseServerTimestamp (text: string): number {
  if (text.length === 28 && text.charCodeAt(10) === 84 /* T */) {
    const t = timestampAt(Buffer.from(text, 'latin1'), 0)
    if (!Number.isNaN(t)) return t
  }
  // Another writer's ISO form, e.g. `+01:00` or `Z`.
  const iso = text.replace(/([+-]\d{2})(\d{2})$/, '$1:$2')
  return Date.parse(iso)
}

const digit = (b: Uint8Array, i: number): number => {
  const d = (b[i] as number) - 48
  return d >= 0 && d <= 9 ? d : NaN
}
const two = (b: Uint8Array, i: number): number => digit(b, i) * 10 + digit(b, i + 1)

/** Parses the 28 bytes `YYYY-MM-DDTHH:mm:ss.sss±HHMM` at `i`; NaN when they are not that. */
export function timestampAt (b: Uint8Array, i: number): number {
  const year = two(b, i) * 100 + two(b, i + 2)
  const sign = b[i + 23] === 43 ? 1 : b[i + 23] === 45 ? -1 : NaN
  const offsetMinutes = two(b, i + 24) * 60 + two(b, i + 26)
  const wall = Date.UTC(year, two(b, i + 5) - 1, two(b, i + 8), two(b, i + 11), two(b, i + 14), two(b, i + 17), digit(b, i + 20) * 100 + two(b, i + 21))
  return wall - sign * offsetMinutes * 60_000
}
