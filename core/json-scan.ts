import { isUtf8 } from 'node:buffer'
import { ROUTING_KEY_FIELDS, scalar, TOPIC_FIELDS } from './destination.js'

// Where an event names its topic and routing key is part of the destination contract (readers need it too).
export { firstField, ROUTING_KEY_FIELDS, scalar, TOPIC_FIELDS } from './destination.js'

/**
 * One event of a body: where its JSON text is in the source bytes, and its topic and routing key
 * when the event itself names them.
 */
export interface EventSpan {
  readonly start: number
  readonly end: number
  /** The text holds CR or LF (as whitespace between tokens): they must become spaces in a line. */
  readonly lineBreaks: boolean
  readonly topic: string | undefined
  readonly routingKey: string | undefined
}

/** How the body is to be parsed: `ndjson` line by line, `auto` by its content. */
export type BodyKind = 'auto' | 'ndjson'

// Byte values.
const TAB = 9
const LF = 10
const CR = 13
const SPACE = 32
const QUOTE = 34
const COMMA = 44
const COLON = 58
const BACKSLASH = 92
const OPEN_ARRAY = 91
const CLOSE_ARRAY = 93
const OPEN_OBJECT = 123
const CLOSE_OBJECT = 125

const MAX_DEPTH = 512

const FIELD_TOPIC = 0
const FIELD_AUDIT_TOPIC = 1
const FIELD_ROUTING_KEY = 2
const FIELD_AUDIT_ROUTING_KEY = 3
const FIELD_NAMES = [...TOPIC_FIELDS, ...ROUTING_KEY_FIELDS] as const
const FIELD_BYTES = FIELD_NAMES.map((name) => Buffer.from(`"${name}"`))

// The scanner runs to completion without yielding, so its state can live at module level: one
// stack serves every call, and a scan of one event sets the rest.
const stack = new Uint8Array(MAX_DEPTH)
/** Where the last scan found the text invalid (or could not vouch for it); for error messages only. */
let failedAt = -1
const fail = (i: number): -1 => { failedAt = i; return -1 }
/** The string just scanned held an escape. */
let escaped = false
/** Value spans of the routing fields seen in the current event (start, end; -1 when absent). */
const fields = new Int32Array(8)

/** The index of the first non-whitespace byte from `i`. */
function skipSpace (b: Uint8Array, i: number): number {
  let c = b[i] as number
  while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i] as number
  return i
}

/** Scans the string whose opening quote is at `i`; returns the index after its closing quote, or -1. */
function scanString (b: Uint8Array, i: number, end: number): number {
  i++
  for (;;) {
    if (i >= end) return -1
    const c = b[i] as number
    // Most bytes of an audit event are letters: test for them first.
    if (c > BACKSLASH) { i++; continue }
    if (c === QUOTE) return i + 1
    if (c === BACKSLASH) {
      escaped = true
      const e = b[i + 1]
      if (e === 117) { // \uXXXX
        for (let k = 2; k < 6; k++) {
          const h = b[i + k] as number
          if (!((h >= 48 && h <= 57) || (h >= 65 && h <= 70) || (h >= 97 && h <= 102))) return -1
        }
        i += 6
      } else if (e === QUOTE || e === BACKSLASH || e === 47 || e === 98 || e === 102 || e === 110 || e === 114 || e === 116) {
        i += 2
      } else {
        return -1
      }
      continue
    }
    if (c < SPACE) return -1
    i++
  }
}

function isDigit (c: number): boolean {
  return c >= 48 && c <= 57
}

/** Scans a number at `i` (RFC 8259 grammar); returns the index after it, or -1. */
function scanNumber (b: Uint8Array, i: number): number {
  if (b[i] === 45) i++
  let c = b[i] as number
  if (c === 48) {
    c = b[++i] as number
  } else if (c >= 49 && c <= 57) {
    do c = b[++i] as number; while (isDigit(c))
  } else {
    return -1
  }
  if (c === 46) {
    c = b[++i] as number
    if (!isDigit(c)) return -1
    do c = b[++i] as number; while (isDigit(c))
  }
  if (c === 101 || c === 69) {
    c = b[++i] as number
    if (c === 43 || c === 45) c = b[++i] as number
    if (!isDigit(c)) return -1
    do c = b[++i] as number; while (isDigit(c))
  }
  return i
}

function scanLiteral (b: Uint8Array, i: number): number {
  const c = b[i]
  if (c === 116) return b[i + 1] === 114 && b[i + 2] === 117 && b[i + 3] === 101 ? i + 4 : -1 // true
  if (c === 102) return b[i + 1] === 97 && b[i + 2] === 108 && b[i + 3] === 115 && b[i + 4] === 101 ? i + 5 : -1 // false
  if (c === 110) return b[i + 1] === 117 && b[i + 2] === 108 && b[i + 3] === 108 ? i + 4 : -1 // null
  return -1
}

/** Which routing field the key at [start, end) (quotes included) names, or -1. */
function fieldOf (b: Buffer, start: number, end: number, hasEscapes: boolean): number {
  if (hasEscapes) return (FIELD_NAMES as readonly string[]).indexOf(JSON.parse(b.toString('utf8', start, end)) as string)
  const length = end - start
  if (length !== 7 && length !== 12 && length !== 17) return -1 // none of the names, quoted
  for (let f = 0; f < FIELD_BYTES.length; f++) {
    const name = FIELD_BYTES[f] as Buffer
    if (name.length !== length) continue
    let k = 1
    while (k < length && b[start + k] === name[k]) k++
    if (k === length) return f
  }
  return -1
}

/**
 * Scans the object whose `{` is at `i` through its closing brace, noting the value spans of the
 * routing fields at its top level. Returns the index after it, or -1 when the text is not valid JSON.
 * One flat loop over the bytes with an explicit stack: this is the hot path of ingestion.
 */
function scanEvent (b: Buffer, i: number, end: number): number {
  fields.fill(-1)
  let depth = 0
  let field = -1
  // 0: a value is expected; 1: a key; 2: a value has just ended.
  let mode = 0
  for (;;) {
    let c = b[i] as number
    while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i] as number
    if (mode === 0) {
      if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        const close = c === OPEN_OBJECT ? CLOSE_OBJECT : CLOSE_ARRAY
        i++
        c = b[i] as number
        while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i] as number
        if (c === close) {
          i++
          mode = 2
          if (depth === 0) return i
          continue
        }
        if (depth === MAX_DEPTH) return fail(i)
        stack[depth++] = close
        mode = close === CLOSE_OBJECT ? 1 : 0
        continue
      }
      const next = c === QUOTE ? scanString(b, i, end) : c === 45 || isDigit(c) ? scanNumber(b, i) : scanLiteral(b, i)
      if (next < 0 || next > end) return fail(i)
      i = next
      mode = 2
    } else if (mode === 1) {
      if (c !== QUOTE) return fail(i)
      escaped = false
      const keyEnd = scanString(b, i, end)
      if (keyEnd < 0) return fail(i)
      if (depth === 1) field = fieldOf(b, i, keyEnd, escaped)
      i = keyEnd
      c = b[i] as number
      while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i] as number
      if (c !== COLON) return fail(i)
      i++
      if (depth === 1 && field !== -1) {
        c = b[i] as number
        while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i] as number
        fields[field * 2] = i
      }
      mode = 0
    } else {
      const close = stack[depth - 1]
      if (c === COMMA || c === close) {
        if (depth === 1 && field !== -1) {
          let valueEnd = i
          let p = b[valueEnd - 1] as number
          while (p === SPACE || p === LF || p === CR || p === TAB) p = b[--valueEnd - 1] as number
          fields[field * 2 + 1] = valueEnd
          field = -1
        }
        i++
        if (c === COMMA) {
          mode = close === CLOSE_OBJECT ? 1 : 0
        } else if (--depth === 0) {
          return i > end ? fail(i) : i
        }
        continue
      }
      return fail(i)
    }
  }
}

function fieldValue (b: Buffer, field: number): string | undefined {
  const start = fields[field * 2] as number
  if (start === -1) return undefined
  return scalar(JSON.parse(b.toString('utf8', start, fields[field * 2 + 1])))
}

/** Whether spans, taken in increasing order, hold a CR or LF; each byte is searched once. */
class LineBreaks {
  readonly #b: Buffer
  #lf: number
  #cr: number

  constructor (b: Buffer) {
    this.#b = b
    this.#lf = b.indexOf(LF)
    this.#cr = b.indexOf(CR)
  }

  within (start: number, end: number): boolean {
    if (this.#lf !== -1 && this.#lf < start) this.#lf = this.#b.indexOf(LF, start)
    if (this.#cr !== -1 && this.#cr < start) this.#cr = this.#b.indexOf(CR, start)
    return (this.#lf !== -1 && this.#lf < end) || (this.#cr !== -1 && this.#cr < end)
  }
}

function span (b: Buffer, start: number, end: number, breaks: LineBreaks): EventSpan {
  const hasFields = fields[0] !== -1 || fields[2] !== -1 || fields[4] !== -1 || fields[6] !== -1
  return {
    start,
    end,
    lineBreaks: breaks.within(start, end),
    topic: hasFields ? fieldValue(b, FIELD_TOPIC) ?? fieldValue(b, FIELD_AUDIT_TOPIC) : undefined,
    routingKey: hasFields ? fieldValue(b, FIELD_ROUTING_KEY) ?? fieldValue(b, FIELD_AUDIT_ROUTING_KEY) : undefined
  }
}

function failed (i: number): undefined {
  failedAt = i
  return undefined
}

function scanLines (b: Buffer, from: number, end: number, breaks: LineBreaks): EventSpan[] | undefined {
  const events: EventSpan[] = []
  let lineStart = from
  while (lineStart < end) {
    let lineEnd = b.indexOf(LF, lineStart)
    if (lineEnd === -1) lineEnd = end
    const start = skipSpace(b, lineStart)
    if (start >= lineEnd) {
      lineStart = lineEnd + 1 // a blank line
      continue
    }
    if (b[start] !== OPEN_OBJECT) return failed(start)
    const after = scanEvent(b, start, lineEnd)
    // An object spanning lines is an error in NDJSON.
    if (after < 0) return undefined
    if (after > lineEnd) return failed(lineEnd)
    const event = span(b, start, after, breaks)
    if (skipSpace(b, after) < lineEnd) return failed(skipSpace(b, after))
    events.push(event)
    lineStart = lineEnd + 1
  }
  return events
}

/**
 * Finds the events of a body without building them: validates the JSON (RFC 8259) and notes where
 * each event is and the routing fields it names. Undefined when it cannot vouch for the body
 * (invalid JSON or UTF-8, an element that is not an object, unusual whitespace, deep nesting):
 * the caller then parses it the slow way, which accepts it or says exactly what is wrong.
 */
export function scanEvents (b: Buffer, kind: BodyKind): EventSpan[] | undefined {
  if (!isUtf8(b)) return undefined
  const end = b.length
  const from = skipSpace(b, b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0)
  if (from >= end) return undefined
  const breaks = new LineBreaks(b)
  if (kind === 'ndjson') return scanLines(b, from, end, breaks)
  if (b[from] === OPEN_OBJECT) {
    const after = scanEvent(b, from, end)
    if (after >= 0) {
      const event = span(b, from, after, breaks)
      if (skipSpace(b, after) >= end) return [event]
    }
    // Not one JSON document: NDJSON is the only other accepted shape.
    return scanLines(b, from, end, breaks)
  }
  if (b[from] !== OPEN_ARRAY) return failed(from)
  const events: EventSpan[] = []
  let i = skipSpace(b, from + 1)
  if (b[i] === CLOSE_ARRAY) {
    i++
  } else {
    for (;;) {
      if (b[i] !== OPEN_OBJECT) return failed(i)
      const after = scanEvent(b, i, end)
      if (after < 0) return undefined
      events.push(span(b, i, after, breaks))
      i = skipSpace(b, after)
      const c = b[i++]
      if (c === CLOSE_ARRAY) break
      if (c !== COMMA) return failed(i - 1)
      i = skipSpace(b, i)
    }
  }
  return skipSpace(b, i) >= end ? events : failed(skipSpace(b, i))
}

/**
 * The byte offset where the scanner finds `b` invalid, or -1; for error messages, which must say
 * where a body is wrong without quoting it. Approximate where the scanner declines valid but
 * unusual text (nesting deeper than it follows).
 */
export function invalidAt (b: Buffer, kind: BodyKind = 'auto'): number {
  failedAt = -1
  const from = skipSpace(b, b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0)
  if (from >= b.length) return -1
  if (kind === 'auto' && b[from] !== OPEN_OBJECT && b[from] !== OPEN_ARRAY) return from
  const spans = kind === 'ndjson' || b[from] === OPEN_ARRAY ? scanEvents(b, kind) : scanEvent(b, from, b.length) < 0 ? undefined : []
  return spans === undefined ? failedAt : -1
}
