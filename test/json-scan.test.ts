import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { parseEvents } from '../core/parse-events.js'
import type { BodyKind } from '../core/json-scan.js'
import { firstField, ROUTING_KEY_FIELDS, scanEvents, TOPIC_FIELDS } from '../core/json-scan.js'

interface Expected { value: Record<string, unknown>, topic: string | undefined, routingKey: string | undefined }
type Oracle = Expected[] | 'invalid'

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

function described (value: Record<string, unknown>): Expected {
  return { value, topic: firstField(value, TOPIC_FIELDS), routingKey: firstField(value, ROUTING_KEY_FIELDS) }
}

function oracleLines (text: string): Oracle {
  const out: Expected[] = []
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    let value: unknown
    try { value = JSON.parse(line) } catch { return 'invalid' }
    if (!isObject(value)) return 'invalid'
    out.push(described(value))
  }
  return out
}

/** What a body means, by JSON.parse alone: the reference the scanner must never contradict. */
function oracle (bytes: Buffer, kind: BodyKind): Oracle {
  let text = bytes.toString('utf8')
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  if (text.trim() === '') return 'invalid'
  if (kind === 'ndjson') return oracleLines(text)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return text.trimStart().startsWith('{') && text.trim().includes('\n') ? oracleLines(text) : 'invalid'
  }
  if (Array.isArray(value)) return value.every(isObject) ? value.map((v) => described(v as Record<string, unknown>)) : 'invalid'
  return isObject(value) ? [described(value)] : 'invalid'
}

/** The scanner's answer must agree with the oracle on every event it vouches for. */
function checkAgainstOracle (bytes: Buffer, kind: BodyKind): boolean {
  const spans = scanEvents(bytes, kind)
  if (spans === undefined) return false
  const expected = oracle(bytes, kind)
  expect(expected).not.toBe('invalid')
  const events = expected as Expected[]
  expect(spans.length).toBe(events.length)
  spans.forEach((span, i) => {
    const text = bytes.toString('utf8', span.start, span.end)
    expect(text).toBe(text.trim())
    expect(JSON.parse(text)).toEqual(events[i]?.value)
    expect(span.topic).toBe(events[i]?.topic)
    expect(span.routingKey).toBe(events[i]?.routingKey)
    expect(span.lineBreaks).toBe(/[\r\n]/.test(text))
  })
  return true
}

const routingValue = fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.string({ maxLength: 4 }), { maxLength: 2 }), fc.jsonValue({ maxDepth: 2 }))
const event = fc.record({
  topic: routingValue,
  auditTopic: routingValue,
  routingKey: routingValue,
  auditRoutingKey: routingValue,
  rest: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 6 })
}, { requiredKeys: ['rest'] }).map(({ rest, ...fields }) => ({ ...rest, ...fields }) as Record<string, unknown>)

const spaces = fc.string({ unit: fc.constantFrom(' ', '\t', '\r', '\n'), maxLength: 3 })

/** JSON text of a value with random whitespace between its tokens. */
function spaced (value: unknown, ws: () => string): string {
  if (Array.isArray(value)) return `[${ws()}${value.map((v) => spaced(v, ws)).join(`${ws()},${ws()}`)}${ws()}]`
  if (isObject(value)) return `{${ws()}${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}${ws()}:${ws()}${spaced(v, ws)}`).join(`${ws()},${ws()}`)}${ws()}}`
  return JSON.stringify(value)
}

describe('scanEvents', () => {
  it('vouches for compact JSON bodies and agrees with JSON.parse on every event', () => {
    fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 5 }), (events) => {
      expect(checkAgainstOracle(Buffer.from(JSON.stringify(events)), 'auto')).toBe(true)
      expect(checkAgainstOracle(Buffer.from(JSON.stringify(events[0])), 'auto')).toBe(true)
      const ndjson = Buffer.from(events.map((e) => JSON.stringify(e)).join('\n') + '\n')
      expect(checkAgainstOracle(ndjson, 'ndjson')).toBe(true)
      if (events.length > 1) expect(checkAgainstOracle(ndjson, 'auto')).toBe(true)
    }), { numRuns: 500 })
  })

  it('agrees with JSON.parse whatever the whitespace, escapes and Unicode', () => {
    fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 3 }), fc.array(spaces, { minLength: 1, maxLength: 50 }), fc.boolean(), (events, pool, bom) => {
      let n = 0
      const ws = (): string => pool[n++ % pool.length] as string
      const escapedUnicode = (text: string): string => text.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
      for (const text of [spaced(events, ws), escapedUnicode(JSON.stringify(events)), ` \n${JSON.stringify(events)}\r\n `]) {
        const bytes = Buffer.from((bom ? '\ufeff' : '') + text)
        expect(checkAgainstOracle(bytes, 'auto')).toBe(true)
      }
    }), { numRuns: 300 })
  })

  it('never vouches for a body JSON.parse refuses: random damage to valid bodies', () => {
    const damage = fc.tuple(fc.nat(), fc.nat({ max: 3 }), fc.constantFrom(
      '{', '}', '[', ']', '"', ',', ':', '\\', '\\u', '\\x', '\\u12', 'u', '0', '-', '.', 'e', 'E', '+', '01', '1.', '-.5', '1e', 'tru', 'nul', 'falsey', 'NaN',
      '\u0000', '\u001f', '\t', '\n', '\r', ' ', '\u00a0', '\u2028', '\ufeff', 'é', '\ud83d', '\ud83d\ude00', '//', '/*', "'"))
    fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 3 }), fc.array(damage, { minLength: 1, maxLength: 3 }), fc.constantFrom<BodyKind>('auto', 'ndjson'), (events, damages, kind) => {
      let text = kind === 'ndjson' ? events.map((e) => JSON.stringify(e)).join('\n') : JSON.stringify(events)
      for (const [at, remove, insert] of damages) {
        const i = at % (text.length + 1)
        text = text.slice(0, i) + insert + text.slice(i + remove)
      }
      const bytes = Buffer.from(text)
      if (scanEvents(bytes, kind) !== undefined) checkAgainstOracle(bytes, kind)
    }), { numRuns: 3000 })
  })

  it('never vouches for bytes that are not UTF-8, and leaves deep nesting to JSON.parse', () => {
    expect(scanEvents(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), 'auto')).toBeUndefined()
    const deep = `{"a":${'['.repeat(2000)}${']'.repeat(2000)}}`
    expect(scanEvents(Buffer.from(deep), 'auto')).toBeUndefined()
    expect(parseEvents(Buffer.from(deep), 'auto').events).toHaveLength(1)
  })

  it('reads routing fields at the top level only, the last of duplicates, through escapes', () => {
    const [a, b, c, d] = scanEvents(Buffer.from(JSON.stringify([
      { nested: { topic: 'no' }, routingKey: ['rk', 'other'] },
      { topic: '', auditTopic: 7, routingKey: 'first', x: 1 }
    ]).replace(/,"x":1/, ',"routingKey":"last"') + '\n'), 'auto') ?? []
    expect(a).toMatchObject({ topic: undefined, routingKey: 'rk' })
    expect(b).toMatchObject({ topic: '7', routingKey: 'last' })
    expect(c).toBeUndefined()
    expect(d).toBeUndefined()
    const [escaped] = scanEvents(Buffer.from('{"\\u0074opic" : "t\\u00e9" , "routing\\u004bey":true}'), 'auto') ?? []
    expect(escaped).toMatchObject({ topic: 'té', routingKey: 'true' })
  })
})

describe('parseEvents', () => {
  it('refuses invalid UTF-8 rather than turning it into U+FFFD', () => {
    expect(() => parseEvents(Buffer.concat([Buffer.from('{"topic":"a'), Buffer.from([0xff]), Buffer.from('"}')]), 'auto')).toThrow(/not valid UTF-8/)
  })

  it('gives the same events by the fast and the slow path', () => {
    // Nesting deeper than the scanner follows takes the slow path; the same body less deep the fast one.
    const deep = `${'['.repeat(600)}${']'.repeat(600)}`
    const text = '[{"a":1.50,"topic":"t"},\n {"b":"x","d":[]}]'
    const fast = parseEvents(Buffer.from(text), 'auto')
    expect(fast.source).toEqual(Buffer.from(text))
    const slow = parseEvents(Buffer.from(`[{"a":1.50,"topic":"t"},\n {"b":"x","d":${deep}}]`), 'auto')
    const texts = (p: ReturnType<typeof parseEvents>): string[] => p.events.map((e) => p.source.toString('utf8', e.start, e.end))
    expect(texts(fast)).toEqual(['{"a":1.50,"topic":"t"}', '{"b":"x","d":[]}'])
    expect(texts(slow)).toEqual(['{"a":1.50,"topic":"t"}', `{"b":"x","d":${deep}}`])
    expect(fast.events.map((e) => e.topic)).toEqual(['t', undefined])
    expect(slow.events.map((e) => e.topic)).toEqual(['t', undefined])
  })
})
