import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import type { StoredEvent, StoredRecord } from '../core/destination.js'
import { parseTimeBound } from '../core/query-time.js'
import { parseServerTimestamp } from '../core/time.js'
import { combineConditions, parseWhere } from '../core/where.js'

function event (clientEvent: Record<string, unknown>, extra: Partial<StoredEvent> = {}): StoredEvent {
  const record: StoredRecord = { clientEvent, origAddress: '10.0.0.1', serverTimestamp: '2026-11-25T10:00:00.000+0000' }
  return { line: JSON.stringify(record), record, time: Date.UTC(2026, 10, 25, 10), topic: 'generic', routingKey: 'rk', source: 'a/b.jsonl', ...extra }
}

describe('the --where grammar', () => {
  it.each([
    ['clientEvent.projectKey=CHURN', { projectKey: 'CHURN' }, true],
    ['projectKey=CHURN', { projectKey: 'CHURN' }, true],
    ['projectKey=churn', { projectKey: 'CHURN' }, false],
    ['projectKey!=CHURN', { projectKey: 'SALES' }, true],
    ['projectKey!=CHURN', {}, true],
    ['projectKey=CHURN', {}, false],
    ['projectKey=', { projectKey: '' }, true],
    ['details.n=3', { details: { n: 3 } }, true],
    ['details.n=3', { details: { n: '3' } }, true],
    ['details.ok=true', { details: { ok: true } }, true],
    ['details.none=null', { details: { none: null } }, true],
    ['details=x', { details: { a: 1 } }, false],
    ['authVia=SESSION_COOKIE', { authVia: ['API_KEY', 'SESSION_COOKIE'] }, true],
    ['authVia.0=API_KEY', { authVia: ['API_KEY', 'SESSION_COOKIE'] }, true],
    ['authUser~curie', { authUser: 'marie.curie' }, true],
    ['authUser~Curie', { authUser: 'marie.curie' }, false],
    ['authUser~/^MARIE\\./i', { authUser: 'marie.curie' }, true],
    ['authUser~/^curie/', { authUser: 'marie.curie' }, false],
    ['callPath~/dip/api/', { callPath: ['/dip/api/projects'] }, true],
    ['msg~a=b', { msg: 'xa=by' }, true],
    ['url=http://x?a=b', { url: 'http://x?a=b' }, true],
    ['origAddress=10.0.0.1', {}, true],
    ['serverTimestamp~2026-11-25T10', {}, true],
    ['topic=generic', {}, true],
    ['routingKey~r', {}, true],
    ['file~.jsonl', {}, true]
  ])('%s on %j: %s', (expression, clientEvent, result) => {
    expect(parseWhere(expression).test(event(clientEvent))).toBe(result)
  })

  it.each([
    ['clientEvent.projectKey', 23, 'expected =, != or ~ after the field path'],
    ['', 1, 'expected path=value, path!=value, path~text or path~/regex/'],
    ['=CHURN', 1, 'expected a field path before "="'],
    ['a..b=1', 3, 'expected a key between the dots of the field path'],
    ['.a=1', 1, 'expected a key between the dots'],
    ['a.=1', 3, 'expected a key between the dots'],
    ['client Event=1', 7, 'unexpected white space in the field path'],
    ['a~/(/', 3, 'invalid regular expression']
  ])('%j is refused at character %i: %s', (expression, at, problem) => {
    expect(() => parseWhere(expression)).toThrow(expect.objectContaining({
      code: 'EVS_ERR_QUERY_INVALID',
      message: expect.stringContaining(`at character ${at}: ${problem}`)
    }))
    try {
      parseWhere(expression)
    } catch (err) {
      // The expression is shown with a caret under the character.
      const lines = (err as Error).message.split('\n')
      expect(lines[1]).toBe(`  ${expression}`)
      expect(lines[2]).toBe(`  ${' '.repeat(at - 1)}^`)
    }
  })

  // The pre-check on raw bytes must never drop a line that matches: whatever the values and
  // however the line spells them (escapes, Unicode, numbers in other forms).
  it('the byte pre-check never excludes a matching line', () => {
    const scalar = fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 8 }),
      fc.constantFrom('CHURN', 'a"b', 'back\\slash', 'é', '1e3', '1000', 'true', 'null', '-0', '0.5'),
      fc.integer({ min: -2000, max: 2000 }),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null)
    )
    const spell = (value: unknown, escape: boolean): string => {
      if (typeof value === 'number' && escape && Number.isInteger(value) && value !== 0 && Math.abs(value) < 1e15) return `${value / 10}e1`
      const text = JSON.stringify(value)
      if (!escape || typeof value !== 'string') return text
      return text.replace(/[A-Za-z]/, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    }
    fc.assert(fc.property(scalar, fc.array(scalar, { maxLength: 3 }), fc.boolean(), fc.constantFrom('=', '~', '!='), fc.oneof(fc.constant(undefined), fc.string({ maxLength: 4 })), (value, others, escape, op, probe) => {
      const wanted = probe ?? (typeof value === 'string' ? value.slice(0, 3) : JSON.stringify(value))
      const line = `{"clientEvent":{"f":${spell(value, escape)},"o":[${others.map((o) => spell(o, false)).join(',')}]},"origAddress":"x","serverTimestamp":"2026-11-25T10:00:00.000+0000"}`
      const record = JSON.parse(line) as StoredRecord
      const { where, lineMustContain } = combineConditions([parseWhere(`f${op}${wanted}`)])
      const e = event(record.clientEvent)
      if (where?.(e) !== true || lineMustContain === undefined) return
      const bytes = Buffer.from(line)
      const passes = bytes.includes(0x5c) || lineMustContain.every((group) => group.some((needle) => bytes.includes(needle)))
      expect(passes, `${line} / f${op}${wanted}`).toBe(true)
    }), { numRuns: 3000 })
  })
})

describe('query time bounds', () => {
  const now = Date.UTC(2026, 10, 26, 15, 20, 30)
  it.each([
    ['2026-11-25', 'UTC', Date.UTC(2026, 10, 25)],
    ['2026-11-25T14:00', 'UTC', Date.UTC(2026, 10, 25, 14)],
    ['2026-11-25 14:00:30.5', 'UTC', Date.UTC(2026, 10, 25, 14, 0, 30, 500)],
    ['2026-11-25T14:00', 'Europe/Paris', Date.UTC(2026, 10, 25, 13)],
    ['2026-07-01T00:00', 'Europe/Paris', Date.UTC(2026, 5, 30, 22)],
    ['2026-11-25T14:00Z', 'Europe/Paris', Date.UTC(2026, 10, 25, 14)],
    ['2026-11-25T14:00+05:30', 'UTC', Date.UTC(2026, 10, 25, 8, 30)],
    ['2026-11-25T14:00-0200', 'UTC', Date.UTC(2026, 10, 25, 16)],
    ['now', 'UTC', now],
    ['today', 'UTC', Date.UTC(2026, 10, 26)],
    // 15:20 UTC is already the 27th in Tokyo: yesterday there began on the 26th at 00:00 JST.
    ['yesterday', 'Asia/Tokyo', Date.UTC(2026, 10, 26) - 9 * 3_600_000],
    ['now-2h', 'UTC', now - 2 * 3_600_000],
    ['-7d', 'UTC', now - 7 * 86_400_000],
    ['now - 90m', 'UTC', now - 90 * 60_000]
  ])('%s in %s', (text, zone, expected) => {
    expect(parseTimeBound(text, zone, now, '--from')).toBe(expected)
  })

  it.each(['25/11/2026', '2026-13-01', '2026-02-30', '2026-11-25T25:00', 'soon', '-2y'])('refuses %s', (text) => {
    expect(() => parseTimeBound(text, 'UTC', now, '--from')).toThrow(expect.objectContaining({ code: 'EVS_ERR_QUERY_INVALID', message: expect.stringContaining('--from') }))
  })

  it('reads serverTimestamp as the server writes it, and other ISO forms', () => {
    expect(parseServerTimestamp('2026-11-26T02:47:43.123+0000')).toBe(Date.UTC(2026, 10, 26, 2, 47, 43, 123))
    expect(parseServerTimestamp('2026-11-26T03:47:43.123+0100')).toBe(Date.UTC(2026, 10, 26, 2, 47, 43, 123))
    expect(parseServerTimestamp('2026-11-26T02:47:43.123Z')).toBe(Date.UTC(2026, 10, 26, 2, 47, 43, 123))
    expect(parseServerTimestamp('2026-11-25T21:47:43-05:00')).toBe(Date.UTC(2026, 10, 26, 2, 47, 43))
    expect(Number.isNaN(parseServerTimestamp('yesterday'))).toBe(true)
  })
})
