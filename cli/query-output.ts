import type { StoredEvent } from '../core/destination.js'
import { fieldValue, parseFieldPath, valueText, type FieldPath } from '../core/where.js'

export type OutputFormat = 'ndjson' | 'table' | 'csv'
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['ndjson', 'table', 'csv']

/** Columns of `table` and `csv` when `--fields` is not given. */
export const DEFAULT_FIELDS = 'serverTimestamp,topic,routingKey,authUser,msgType,origAddress'

/** Where output goes: resolves once the bytes are taken (the stream drained). */
export type Sink = (text: string) => Promise<void>

/** `--fields a,b.c`: column paths, or an error naming the bad one. */
export function parseFields (text: string, option = '--fields'): FieldPath[] {
  const names = text.split(',').map((s) => s.trim())
  let at = 0
  return names.map((name) => {
    const path = parseFieldPath(name, option, text, at)
    at += name.length + 1
    return path
  })
}

const TABLE_SAMPLE = 100
const MAX_COLUMN = 60
const MIN_COLUMN = 6

function cell (value: unknown): string {
  return (valueText(value) ?? '').replace(/[\r\n\t]+/g, ' ')
}

function csvCell (value: unknown): string {
  const text = valueText(value) ?? ''
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

/** Column widths that fit `width` characters: the widest columns give way first. */
function fit (natural: number[], width: number): number[] {
  const widths = natural.map((w) => Math.min(w, MAX_COLUMN))
  const total = (): number => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1)
  while (total() > width) {
    let widest = 0
    for (let i = 1; i < widths.length; i++) if ((widths[i] as number) > (widths[widest] as number)) widest = i
    if ((widths[widest] as number) <= MIN_COLUMN) break
    widths[widest] = (widths[widest] as number) - 1
  }
  return widths
}

function pad (text: string, width: number, last: boolean): string {
  const chars = [...text]
  if (chars.length > width) return `${chars.slice(0, Math.max(0, width - 1)).join('')}…`
  return last ? text : text + ' '.repeat(width - chars.length)
}

/**
 * Writes rows in one of the output formats. `table` holds its first rows back to size the
 * columns (to fit `width`), then streams; `csv` and `ndjson` stream from the first row.
 */
export class RowWriter {
  readonly #sink: Sink
  readonly #format: OutputFormat
  readonly #headers: string[]
  readonly #width: number
  #sample: string[][] | undefined = []
  #widths: number[] | undefined
  #started = false

  constructor (sink: Sink, format: OutputFormat, headers: string[], width = 120) {
    this.#sink = sink
    this.#format = format
    this.#headers = headers
    this.#width = width
  }

  /** One row: values in column order (ndjson writes an object of them, keyed by header). */
  async row (values: unknown[]): Promise<void> {
    switch (this.#format) {
      case 'ndjson': {
        const object: Record<string, unknown> = {}
        this.#headers.forEach((h, i) => { object[h] = values[i] })
        await this.#sink(`${JSON.stringify(object)}\n`)
        return
      }
      case 'csv':
        if (!this.#started) {
          this.#started = true
          await this.#sink(`${this.#headers.map(csvCell).join(',')}\r\n`)
        }
        await this.#sink(`${values.map(csvCell).join(',')}\r\n`)
        return
      case 'table': {
        const cells = values.map(cell)
        if (this.#sample !== undefined) {
          this.#sample.push(cells)
          if (this.#sample.length >= TABLE_SAMPLE) await this.#flushSample()
          return
        }
        await this.#sink(this.#line(cells))
      }
    }
  }

  #line (cells: string[]): string {
    const widths = this.#widths as number[]
    return `${cells.map((c, i) => pad(c, widths[i] as number, i === cells.length - 1)).join('  ').trimEnd()}\n`
  }

  async #flushSample (): Promise<void> {
    const sample = this.#sample ?? []
    this.#sample = undefined
    this.#widths = fit(this.#headers.map((h, i) => Math.max([...h].length, ...sample.map((r) => [...(r[i] ?? '')].length))), this.#width)
    const text = [this.#line(this.#headers), ...sample.map((r) => this.#line(r))].join('')
    await this.#sink(text)
  }

  /** Shows what is held back (a table's first rows), e.g. before waiting for more in --follow. */
  async flush (): Promise<void> {
    if (this.#format === 'table' && this.#sample !== undefined && this.#sample.length > 0) await this.#flushSample()
  }

  async end (): Promise<void> {
    await this.flush()
  }
}

/** Writes events: the stored line itself in ndjson without --fields, else the chosen fields as rows. */
export class EventWriter {
  readonly #sink: Sink
  readonly #fields: FieldPath[] | undefined
  readonly #rows: RowWriter | undefined

  constructor (sink: Sink, format: OutputFormat, fields: FieldPath[] | undefined, width?: number) {
    this.#sink = sink
    this.#fields = format === 'ndjson' && fields === undefined ? undefined : fields ?? parseFields(DEFAULT_FIELDS)
    this.#rows = this.#fields === undefined ? undefined : new RowWriter(sink, format, this.#fields.map((f) => f.text), width)
  }

  async write (event: StoredEvent): Promise<void> {
    if (this.#rows === undefined) {
      await this.#sink(`${event.line}\n`)
      return
    }
    await this.#rows.row((this.#fields as FieldPath[]).map((f) => fieldValue(event, f)))
  }

  async flush (): Promise<void> {
    await this.#rows?.flush()
  }

  async end (): Promise<void> {
    await this.#rows?.end()
  }
}

/** `--count-by a,b`: events counted per distinct combination of values; memory grows with the number of combinations. */
export class GroupCounter {
  readonly #fields: FieldPath[]
  readonly #groups = new Map<string, { values: unknown[], count: number }>()

  constructor (fields: FieldPath[]) {
    this.#fields = fields
  }

  add (event: StoredEvent): void {
    const values = this.#fields.map((f) => fieldValue(event, f))
    const key = JSON.stringify(values)
    const group = this.#groups.get(key)
    if (group === undefined) this.#groups.set(key, { values, count: 1 })
    else group.count++
  }

  /** Groups, most events first (then by their values), at most `limit` of them. */
  async write (sink: Sink, format: OutputFormat, limit = Infinity, width?: number): Promise<void> {
    const rows = new RowWriter(sink, format, [...this.#fields.map((f) => f.text), 'count'], width)
    const groups = [...this.#groups.values()].sort((a, b) => b.count - a.count || (JSON.stringify(a.values) < JSON.stringify(b.values) ? -1 : 1))
    for (const group of groups.slice(0, limit)) await rows.row([...group.values, group.count])
    await rows.end()
  }
}
