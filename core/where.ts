import { equalityNeedle, type StoredEvent } from './destination.js'
import { EVS_ERR_QUERY_INVALID } from './errors.js'

/**
 * Field paths and the `--where` grammar of `dss-event-server query`:
 *
 *   path=value        the field's value is `value`
 *   path!=value       it is not (a missing field counts as "not")
 *   path~text         its value contains `text`
 *   path~/regex/flags its value matches the regular expression
 *
 * A path is `.`-separated keys (an array index is a number). It starts at the stored record
 * (`clientEvent`, `origAddress`, `serverTimestamp`); any other first key is looked up in
 * `clientEvent`, so `projectKey` means `clientEvent.projectKey`. `topic`, `routingKey` and `file`
 * are the event's routing and the file it was read from. Values compare as text: a string as it
 * is, a number, boolean or null as JSON writes it; an array matches when one of its elements does;
 * an object matches nothing.
 */

const RECORD_FIELDS = new Set(['clientEvent', 'origAddress', 'serverTimestamp'])
const VIRTUAL_FIELDS = new Set(['topic', 'routingKey', 'file'])

export type FieldPath =
  | { readonly kind: 'record', readonly keys: readonly string[], readonly text: string }
  | { readonly kind: 'topic' | 'routingKey' | 'file', readonly text: string }

/** A path as the user wrote it, resolved; throws EVS_ERR_QUERY_INVALID naming `option` and the position. */
export function parseFieldPath (text: string, option = '--fields', expression = text, offset = 0): FieldPath {
  if (text === '') throw invalid(option, expression, offset, 'expected a field path')
  const keys = text.split('.')
  let at = offset
  for (const key of keys) {
    if (key === '') throw invalid(option, expression, at, 'expected a key between the dots of the field path')
    const space = key.search(/\s/)
    if (space !== -1) throw invalid(option, expression, at + space, 'unexpected white space in the field path')
    at += key.length + 1
  }
  if (keys.length === 1 && VIRTUAL_FIELDS.has(text)) return { kind: text as 'topic' | 'routingKey' | 'file', text }
  return { kind: 'record', keys: RECORD_FIELDS.has(keys[0] as string) ? keys : ['clientEvent', ...keys], text }
}

/** The value at `path` in an event; undefined when missing. */
export function fieldValue (event: StoredEvent, path: FieldPath): unknown {
  switch (path.kind) {
    case 'topic': return event.topic
    case 'routingKey': return event.routingKey
    case 'file': return event.source
  }
  let value: unknown = event.record
  for (const key of path.keys) {
    if (value === null || typeof value !== 'object') return undefined
    value = (value as Record<string, unknown>)[key]
  }
  return value
}

/** A value as text, for comparisons and output: strings as they are, anything else as JSON. */
export function valueText (value: unknown): string | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'string') return value
  return JSON.stringify(value)
}

function matches (value: unknown, test: (text: string) => boolean): boolean {
  if (value === undefined) return false
  if (Array.isArray(value)) return value.some((item) => matches(item, test))
  if (value !== null && typeof value === 'object') return false
  return test(typeof value === 'string' ? value : JSON.stringify(value))
}

export interface WhereCondition {
  /** The expression as given. */
  readonly text: string
  test(event: StoredEvent): boolean
  /**
   * Byte strings one of which the stored line of any matching event contains, unless the line
   * holds a backslash (escapes can spell any string). Undefined when no such strings exist.
   */
  readonly needles: readonly Buffer[] | undefined
}

const NUMBER_CHARS = /^[0-9.eE+-]*$/

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** What a line holding a field that contains `text` must contain. */
function substringNeedle (text: string): Buffer | undefined {
  // Only a number's text is made of these characters, and it could be spelled otherwise; half a
  // surrogate pair has no UTF-8 bytes of its own.
  if (NUMBER_CHARS.test(text) || LONE_SURROGATE.test(text)) return undefined
  return Buffer.from(JSON.stringify(text).slice(1, -1))
}

function invalid (option: string, expression: string, at: number, problem: string): Error {
  return new EVS_ERR_QUERY_INVALID(`Invalid ${option} expression at character ${at + 1}: ${problem}\n  ${expression}\n  ${' '.repeat(at)}^`)
}

/** `path` equals one of `values` (as --user, --msg-type and --address do). */
export function equalsAny (path: FieldPath, values: readonly string[], text = `${path.text}=${values.join('|')}`): WhereCondition {
  const set = new Set(values)
  const needles = path.kind === 'record' ? values.map(equalityNeedle) : []
  return {
    text,
    test: (event) => matches(fieldValue(event, path), (t) => set.has(t)),
    needles: needles.length > 0 && needles.every((n) => n !== undefined) ? needles as Buffer[] : undefined
  }
}

/** Parses one `--where` expression; throws EVS_ERR_QUERY_INVALID saying where it is wrong. */
export function parseWhere (expression: string, option = '--where'): WhereCondition {
  const op = /!=|=|~/.exec(expression)
  if (op === null) {
    const at = expression.length
    throw invalid(option, expression, at, expression === ''
      ? 'expected path=value, path!=value, path~text or path~/regex/'
      : 'expected =, != or ~ after the field path')
  }
  const rawPath = expression.slice(0, op.index)
  if (rawPath.trim() === '') throw invalid(option, expression, 0, `expected a field path before "${op[0]}"`)
  const path = parseFieldPath(rawPath, option, expression, 0)
  const value = expression.slice(op.index + op[0].length)
  const valueAt = op.index + op[0].length
  switch (op[0]) {
    case '=': return equalsAny(path, [value], expression)
    case '!=': {
      const equal = equalsAny(path, [value])
      return { text: expression, test: (event) => !equal.test(event), needles: undefined }
    }
  }
  const regex = /^\/(.*)\/([a-z]*)$/s.exec(value)
  if (regex !== null) {
    let re: RegExp
    try {
      // `g` and `y` would make test() stateful across events.
      re = new RegExp(regex[1] as string, (regex[2] as string).replace(/[gy]/g, ''))
    } catch (err) {
      throw invalid(option, expression, valueAt, `invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`)
    }
    return { text: expression, test: (event) => matches(fieldValue(event, path), (t) => re.test(t)), needles: undefined }
  }
  const needle = path.kind === 'record' ? substringNeedle(value) : undefined
  return {
    text: expression,
    test: (event) => matches(fieldValue(event, path), (t) => t.includes(value)),
    needles: needle === undefined ? undefined : [needle]
  }
}

/** Conditions combined with AND, as `EventQuery.where` and `EventQuery.lineMustContain`. */
export function combineConditions (conditions: readonly WhereCondition[]): { where?: (event: StoredEvent) => boolean, lineMustContain?: Buffer[][] } {
  if (conditions.length === 0) return {}
  const tests = conditions.map((c) => c.test)
  const lineMustContain = conditions.flatMap((c) => c.needles === undefined ? [] : [[...c.needles]])
  return {
    where: tests.length === 1 ? tests[0] : (event) => tests.every((test) => test(event)),
    ...(lineMustContain.length > 0 ? { lineMustContain } : {})
  }
}
