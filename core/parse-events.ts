import { firstField, invalidAt, ROUTING_KEY_FIELDS, scanEvents, TOPIC_FIELDS, type BodyKind, type EventSpan } from './json-scan.js'
import { isUtf8 } from 'node:buffer'
import { EVS_ERR_BODY_EMPTY, EVS_ERR_BODY_INVALID_JSON, EVS_ERR_BODY_INVALID_UTF8, EVS_ERR_BODY_NOT_OBJECT } from './errors.js'

// A decoded body into events: json-scan.ts's fast path first; JSON.parse when it cannot vouch for
// the body, which also gives every error its place (never its text).

/** A body's events: each one's JSON text is a span of `source` (the body itself when it could). */
export interface ParsedBody {
  readonly source: Buffer
  readonly events: readonly EventSpan[]
}

/** One event as the slow path parses it: its JSON text on one line, and its value. */
interface ReceivedEvent {
  readonly raw: string
  readonly value: Record<string, unknown>
}

function describe (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return `a ${typeof value}`
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// JSON whitespace outside strings may hold line breaks; inside strings they are always escaped. So
// replacing CR/LF by spaces keeps the value and makes the text one line.
function oneLine (text: string): string {
  return text.includes('\n') || text.includes('\r') ? text.replace(/[\r\n]/g, ' ') : text
}

/** Index of the quote closing the JSON string whose opening quote is at `open`. */
function stringEnd (text: string, open: number): number {
  let end = text.indexOf('"', open + 1)
  for (;;) {
    let backslashes = 0
    while (text.charCodeAt(end - 1 - backslashes) === 92) backslashes++
    if (backslashes % 2 === 0) return end
    end = text.indexOf('"', end + 1)
  }
}

/**
 * Top-level element texts of a valid JSON array starting at `start`. Strings, most of an audit
 * event, are skipped with indexOf rather than read character by character.
 */
function arrayElements (text: string, start: number): string[] {
  const out: string[] = []
  let depth = 0
  let from = -1
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 34) { // "
      if (depth === 1 && from < 0) from = i
      i = stringEnd(text, i)
    } else if (c === 123 || c === 91) { // { [
      if (depth === 1 && from < 0) from = i
      depth++
    } else if (c === 125 || c === 93) { // } ]
      depth--
      if (depth === 0) {
        if (from >= 0) out.push(text.slice(from, i).trimEnd())
        break
      }
    } else if (depth === 1) {
      if (c === 44) { // ,
        out.push(text.slice(from, i).trimEnd())
        from = -1
      } else if (from < 0 && c !== 32 && c !== 9 && c !== 10 && c !== 13) {
        from = i
      }
    }
  }
  return out
}

/** Line and column (1-based, in characters) of the character at `index` of `text`. */
function lineAndColumn (text: string, index: number): { line: number, column: number } {
  let line = 1
  let lineStart = 0
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) {
    line++
    lineStart = i + 1
  }
  return { line, column: index - lineStart + 1 }
}

/**
 * JSON.parse's complaint about `text`, without the text: V8 quotes parts of the body (a short body
 * whole), and audit events hold user names and other sensitive fields. Only the grammar and the
 * place are kept: the character index where the text goes wrong, when known.
 */
function jsonError (err: unknown, text: string): { index: number | undefined, what: string } {
  const message = (err as Error).message
  const at = /^(.*?)(?: in JSON)? at position (\d+)/.exec(message)
  if (at !== null) return { index: Number(at[2]), what: (at[1] as string).startsWith('Unexpected token') ? 'Unexpected token' : at[1] as string }
  if (message.startsWith('Unexpected end of JSON input')) return { index: text.length, what: 'the text ends before the JSON is complete' }
  const bytes = Buffer.from(text)
  const offset = invalidAt(bytes)
  return { index: offset < 0 ? undefined : bytes.toString('utf8', 0, Math.min(offset, bytes.length)).length, what: 'Unexpected token' }
}

function describeJsonError (err: unknown, text: string): string {
  const { index, what } = jsonError(err, text)
  if (index === undefined) return `in the body: ${what}`
  const { line, column } = lineAndColumn(text, index)
  return `at line ${line}, column ${column}: ${what}`
}

function parseLines (text: string): ReceivedEvent[] {
  const events: ReceivedEvent[] = []
  let lineNumber = 0
  let position = 0
  while (position <= text.length) {
    let end = text.indexOf('\n', position)
    if (end === -1) end = text.length
    lineNumber++
    const line = text.slice(position, end).trim()
    position = end + 1
    if (line === '') continue
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch (err) {
      const { index, what } = jsonError(err, line)
      throw new EVS_ERR_BODY_INVALID_JSON(`at line ${lineNumber}${index === undefined ? '' : `, column ${index + 1}`}: ${what}`)
    }
    if (!isObject(value)) throw new EVS_ERR_BODY_NOT_OBJECT(`line ${lineNumber}`, describe(value))
    events.push({ raw: oneLine(line), value })
  }
  return events
}

/** The slow path: JSON.parse, whose errors say where the body is wrong. */
function parseSlowly (body: Buffer, kind: BodyKind): ReceivedEvent[] {
  // Decoding would turn every invalid byte into U+FFFD, and distinct topics into one folder.
  if (!isUtf8(body)) throw new EVS_ERR_BODY_INVALID_UTF8()
  let text = body.toString('utf8')
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  let start = 0
  while (start < text.length && (text.charCodeAt(start) <= 32)) start++
  if (start === text.length) throw new EVS_ERR_BODY_EMPTY()
  if (kind === 'ndjson') return parseLines(text)

  const first = text.charCodeAt(start)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    // Not one JSON document: NDJSON is the only other accepted shape.
    if (first === 123 && text.trimEnd().includes('\n', start)) return parseLines(text)
    throw new EVS_ERR_BODY_INVALID_JSON(describeJsonError(err, text))
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (!isObject(value[i])) throw new EVS_ERR_BODY_NOT_OBJECT(`array element ${i}`, describe(value[i]))
    }
    const raws = arrayElements(text, start)
    const events: ReceivedEvent[] = new Array(value.length)
    for (let i = 0; i < value.length; i++) events[i] = { raw: oneLine(raws[i] as string), value: value[i] as Record<string, unknown> }
    return events
  }
  if (!isObject(value)) throw new EVS_ERR_BODY_NOT_OBJECT('the body', describe(value))
  return [{ raw: oneLine(text.trim()), value }]
}

/**
 * Parses a decoded body into events: one JSON object, a JSON array of objects, or NDJSON (one
 * object per line). All or nothing: any bad element fails the whole body. Each event's text is
 * kept exactly as sent (number formats, key order), made one line.
 */
export function parseEvents (body: Buffer, kind: BodyKind): ParsedBody {
  // The fast path validates and locates events in the bytes without building them.
  const spans = scanEvents(body, kind)
  if (spans !== undefined) return { source: body, events: spans }
  const received = parseSlowly(body, kind)
  const source = Buffer.from(received.map((e) => e.raw).join(''))
  const events: EventSpan[] = []
  let offset = 0
  for (const { raw, value } of received) {
    const end = offset + Buffer.byteLength(raw)
    events.push({ start: offset, end, lineBreaks: false, topic: firstField(value, TOPIC_FIELDS), routingKey: firstField(value, ROUTING_KEY_FIELDS) })
    offset = end
  }
  return { source, events }
}
