import { wallTime, wallToInstant, type Connection, type QueryStats, type ZonedTime } from '../../core/plugin-api.js'
import { TOKEN } from './layout.js'

type DateToken = 'Y' | 'M' | 'D' | 'H'
type Token = 'topic' | 'routingKey' | DateToken
type Piece = { readonly literal: string } | { readonly token: Token }

/** Values of a key's tokens, as they appear in the key (topic and routing key encoded). */
export type Bindings = Partial<Record<Token, string>>

interface Segment {
  readonly pieces: readonly Piece[]
  readonly tokens: ReadonlySet<Token>
  /** Matches a folder name of this level; its groups are `groups`. */
  readonly regex: RegExp
  readonly groups: readonly Token[]
}

/** A file that may hold matching events. */
export interface PlannedFile {
  readonly key: string
  readonly size: number
  /** The time interval of its partition; infinite where the layout does not bound it. */
  readonly start: number
  readonly end: number
  /** Its folder's topic and routing key, encoded, when the layout has them. */
  readonly topic: string | undefined
  readonly routingKey: string | undefined
}

export interface ReadPlanOptions {
  /** `path` of the destination and its template (see layout.ts). */
  readonly path: string
  readonly template: string
  readonly zone: ZonedTime
  /** Time range, ms; infinite when unbounded. */
  readonly from: number
  readonly to: number
  /** Wanted topics and routing keys, encoded as folder names; all when undefined. */
  readonly topics: ReadonlySet<string> | undefined
  readonly routingKeys: ReadonlySet<string> | undefined
  /** Whether a file name is one to read (known format, not a probe or temporary file). */
  readonly accept: (name: string) => boolean
}

const TOKENS: Record<string, Token> = { '%{topic}': 'topic', '%{routingKey}': 'routingKey', '%Y': 'Y', '%M': 'M', '%D': 'D', '%H': 'H' }
const CHAIN: readonly DateToken[] = ['Y', 'M', 'D', 'H']
const TOKEN_PATTERN: Record<Token, string> = { Y: '(\\d{4})', M: '(\\d{2})', D: '(\\d{2})', H: '(\\d{2})', topic: '([A-Za-z0-9_.%~-]+)', routingKey: '([A-Za-z0-9_.%~-]+)' }
/** Past this many time partitions in the range, date folders are listed rather than enumerated. */
const MAX_PERIODS = 100_000
/** Past this many candidate names for one folder level, its folders are listed instead. */
const MAX_CANDIDATES = 10_000
/**
 * Up to this many possible names of a folder level are entered without listing it: one call each
 * below, where listing the level first would cost one more call and save those of missing folders.
 */
const ENTER_WITHOUT_LISTING = 4

interface Period { readonly values: Readonly<Record<DateToken, string>>, readonly start: number, readonly end: number }

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
const pad = (n: number, width = 2): string => String(n).padStart(width, '0')

/** Wall-clock start of the partition a key's bound date values name, and of the next one. */
function wallSpan (values: Bindings, levels: number): [number, number] {
  const y = Number(values.Y)
  const m = levels > 1 ? Number(values.M) - 1 : 0
  const d = levels > 2 ? Number(values.D) : 1
  const h = levels > 3 ? Number(values.H) : 0
  const start = Date.UTC(y, m, d, h)
  const next = levels === 1 ? Date.UTC(y + 1, 0, 1) : levels === 2 ? Date.UTC(y, m + 1, 1) : levels === 3 ? Date.UTC(y, m, d + 1) : Date.UTC(y, m, d, h + 1)
  return [start, next]
}

/**
 * Which files of a destination can hold events of a time range, topics and routing keys, found by
 * walking its folder template: a level whose few possible names are known (a literal, the wanted
 * topics, the dates the range allows) costs no call; a level with many, or unknown, names is
 * listed one level deep (`listFolders`) and only matching folders are entered; a subtree mostly
 * inside the range is listed in one call. Without `listFolders`, the first level that needs a listing is listed whole.
 */
export class ReadPlan {
  readonly #options: ReadPlanOptions
  readonly #prefix: string
  readonly #segments: Segment[]
  /** Date tokens of the template that bound time: Y, then M, D, H as far as the template has them in turn. */
  readonly #levels: number
  readonly #periods: Period[] | undefined
  /** Whether segments from this index on hold only dates and literals. */
  readonly #timeOnly: boolean[]
  readonly #remainders = new Map<number, { regex: RegExp, groups: Token[] }>()
  readonly hasTopic: boolean
  readonly hasRoutingKey: boolean

  constructor (options: ReadPlanOptions) {
    this.#options = options
    this.#prefix = options.path.split('/').filter((s) => s !== '').join('/')
    this.#segments = options.template.split('/').map((segment) => {
      const pieces: Piece[] = []
      let last = 0
      for (const match of segment.matchAll(TOKEN)) {
        if (match.index > last) pieces.push({ literal: segment.slice(last, match.index) })
        pieces.push({ token: TOKENS[match[0]] as Token })
        last = match.index + match[0].length
      }
      if (last < segment.length) pieces.push({ literal: segment.slice(last) })
      const groups = pieces.flatMap((p) => 'token' in p ? [p.token] : [])
      const regex = new RegExp(`^${pieces.map((p) => 'literal' in p ? escape(p.literal) : TOKEN_PATTERN[p.token]).join('')}$`)
      return { pieces, tokens: new Set(groups), regex, groups }
    })
    const all = new Set(this.#segments.flatMap((s) => [...s.tokens]))
    this.hasTopic = all.has('topic')
    this.hasRoutingKey = all.has('routingKey')
    let levels = 0
    while (levels < CHAIN.length && all.has(CHAIN[levels] as DateToken)) levels++
    this.#levels = levels
    this.#timeOnly = this.#segments.map((_, i) => this.#segments.slice(i).every((s) => !s.tokens.has('topic') && !s.tokens.has('routingKey')))
    this.#periods = this.#enumeratePeriods()
  }

  #enumeratePeriods (): Period[] | undefined {
    const { from, to, zone } = this.#options
    if (this.#levels === 0 || !Number.isFinite(from) || !Number.isFinite(to) || from >= to) return this.#levels === 0 ? undefined : from >= to ? [] : undefined
    const periods: Period[] = []
    const w = new Date(wallTime(zone, from))
    let values: Bindings = {
      Y: pad(w.getUTCFullYear(), 4),
      M: pad(w.getUTCMonth() + 1),
      D: pad(w.getUTCDate()),
      H: pad(w.getUTCHours())
    }
    for (;;) {
      const [wallStart, wallNext] = wallSpan(values, this.#levels)
      const start = wallToInstant(zone, wallStart)
      if (start >= to) return periods
      periods.push({ values: values as Record<DateToken, string>, start, end: wallToInstant(zone, wallNext) })
      if (periods.length > MAX_PERIODS) return undefined
      const n = new Date(wallNext)
      values = { Y: pad(n.getUTCFullYear(), 4), M: pad(n.getUTCMonth() + 1), D: pad(n.getUTCDate()), H: pad(n.getUTCHours()) }
    }
  }

  /** The time interval that the date values bound so far allow. */
  #span (b: Bindings): [number, number] {
    let levels = 0
    while (levels < this.#levels && b[CHAIN[levels] as DateToken] !== undefined) levels++
    if (levels === 0) return [-Infinity, Infinity]
    const [wallStart, wallNext] = wallSpan(b, levels)
    return [wallToInstant(this.#options.zone, wallStart), wallToInstant(this.#options.zone, wallNext)]
  }

  #overlaps ([start, end]: [number, number]): boolean {
    return start < this.#options.to && end > this.#options.from
  }

  /** The share of an interval that lies in the range. */
  #coverage ([start, end]: [number, number]): number {
    const { from, to } = this.#options
    if (!Number.isFinite(start) || !Number.isFinite(end)) return from === -Infinity && to === Infinity ? 1 : 0
    if (end <= start) return 1
    return Math.max(0, Math.min(end, to) - Math.max(start, from)) / (end - start)
  }

  #consistent (b: Bindings, token: Token, value: string): boolean {
    const bound = b[token]
    if (bound !== undefined) return bound === value
    if (token === 'topic') return this.#options.topics?.has(value) ?? true
    if (token === 'routingKey') return this.#options.routingKeys?.has(value) ?? true
    return true
  }

  /** Every name a folder level can have, with the values it binds; undefined when they cannot be known without listing. */
  #candidates (segment: Segment, b: Bindings): Map<string, Bindings> | undefined {
    let combos: Bindings[] = [{}]
    const dateTokens = CHAIN.filter((t) => segment.tokens.has(t))
    if (dateTokens.length > 0) {
      if (this.#periods === undefined) return undefined
      const seen = new Map<string, Bindings>()
      for (const period of this.#periods) {
        if (!CHAIN.every((t) => b[t] === undefined || b[t] === period.values[t])) continue
        const combo: Bindings = {}
        for (const t of dateTokens) combo[t] = period.values[t]
        seen.set(dateTokens.map((t) => combo[t]).join('/'), combo)
      }
      combos = [...seen.values()]
    }
    for (const token of ['topic', 'routingKey'] as const) {
      if (!segment.tokens.has(token)) continue
      const values = b[token] !== undefined ? [b[token]] : [...(token === 'topic' ? this.#options.topics : this.#options.routingKeys) ?? []]
      if (b[token] === undefined && (token === 'topic' ? this.#options.topics : this.#options.routingKeys) === undefined) return undefined
      combos = combos.flatMap((c) => values.map((v) => ({ ...c, [token]: v })))
      if (combos.length > MAX_CANDIDATES) return undefined
    }
    const out = new Map<string, Bindings>()
    for (const combo of combos) {
      let name = ''
      for (const piece of segment.pieces) name += 'literal' in piece ? piece.literal : combo[piece.token] as string
      out.set(name, combo)
    }
    return out
  }

  /** The regular expression of the template from segment `from` on, followed by a file name. */
  #remainder (from: number): { regex: RegExp, groups: Token[] } {
    let found = this.#remainders.get(from)
    if (found === undefined) {
      const groups: Token[] = []
      const parts = this.#segments.slice(from).map((s) => s.pieces.map((p) => {
        if ('literal' in p) return escape(p.literal)
        groups.push(p.token)
        return TOKEN_PATTERN[p.token]
      }).join(''))
      found = { regex: new RegExp(`^${[...parts, '([^/]+)'].join('/')}$`), groups }
      this.#remainders.set(from, found)
    }
    return found
  }

  /** Binds the tokens of `rest` (a key below segment `from`'s folder); undefined when it does not fit the template and filters. */
  #match (from: number, rest: string, b: Bindings): { bindings: Bindings, name: string } | undefined {
    const { regex, groups } = this.#remainder(from)
    const m = regex.exec(rest)
    if (m === null) return undefined
    const out: Bindings = { ...b }
    for (let i = 0; i < groups.length; i++) {
      const token = groups[i] as Token
      const value = m[i + 1] as string
      if (!this.#consistent(out, token, value)) return undefined
      out[token] = value
    }
    return { bindings: out, name: m[groups.length + 1] as string }
  }

  /** Files that may hold matching events, in key order within each folder listed. */
  async * files (connection: Connection, stats: QueryStats, signal?: AbortSignal): AsyncGenerator<PlannedFile> {
    if (this.#periods?.length === 0) return
    yield * this.#walk(connection, stats, signal, this.#prefix === '' ? '' : `${this.#prefix}/`, 0, {})
  }

  async * #walk (connection: Connection, stats: QueryStats, signal: AbortSignal | undefined, prefix: string, i: number, b: Bindings): AsyncGenerator<PlannedFile> {
    signal?.throwIfAborted()
    const span = this.#span(b)
    if (!this.#overlaps(span)) return
    if (i === this.#segments.length || (this.#timeOnly[i] === true && this.#coverage(span) >= 0.5)) {
      yield * this.#list(connection, stats, prefix, i, b)
      return
    }
    const segment = this.#segments[i] as Segment
    const candidates = this.#candidates(segment, b)
    if (candidates !== undefined && candidates.size <= ENTER_WITHOUT_LISTING) {
      for (const [name, values] of candidates) yield * this.#walk(connection, stats, signal, `${prefix}${name}/`, i + 1, { ...b, ...values })
      return
    }
    if (connection.listFolders === undefined) {
      yield * this.#list(connection, stats, prefix, i, b)
      return
    }
    stats.listCalls++
    const names: string[] = []
    for await (const name of connection.listFolders(prefix)) names.push(name)
    names.sort()
    for (const name of names) {
      const values = candidates !== undefined ? candidates.get(name) : this.#matchSegment(segment, name, b)
      if (values !== undefined) yield * this.#walk(connection, stats, signal, `${prefix}${name}/`, i + 1, { ...b, ...values })
    }
  }

  #matchSegment ({ regex, groups }: Segment, name: string, b: Bindings): Bindings | undefined {
    const m = regex.exec(name)
    if (m === null) return undefined
    const out: Bindings = {}
    for (let i = 0; i < groups.length; i++) {
      const token = groups[i] as Token
      const value = m[i + 1] as string
      if (!this.#consistent({ ...b, ...out }, token, value)) return undefined
      out[token] = value
    }
    return out
  }

  async * #list (connection: Connection, stats: QueryStats, prefix: string, i: number, b: Bindings): AsyncGenerator<PlannedFile> {
    stats.listCalls++
    const found: PlannedFile[] = []
    for await (const object of connection.list(prefix)) {
      const matched = this.#match(i, object.key.slice(prefix.length), b)
      if (matched === undefined || !this.#options.accept(matched.name)) continue
      const [start, end] = this.#span(matched.bindings)
      if (!this.#overlaps([start, end])) continue
      found.push({ key: object.key, size: object.size, start, end, topic: matched.bindings.topic, routingKey: matched.bindings.routingKey })
    }
    found.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0))
    stats.filesListed += found.length
    yield * found
  }
}

/** A folder name made by encodeSegment, back to the value; undefined for a shortened (hashed) one. */
export function decodeSegment (name: string): string | undefined {
  if (name.includes('~')) return undefined
  if (!name.includes('%')) return name
  const bytes: number[] = []
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c === 37 && i + 2 < name.length && /^[0-9A-F]{2}$/i.test(name.slice(i + 1, i + 3))) {
      bytes.push(parseInt(name.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      bytes.push(c)
    }
  }
  return Buffer.from(bytes).toString('utf8')
}
