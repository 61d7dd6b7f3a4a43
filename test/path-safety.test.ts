import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { readdir } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'
import { encodeSegment, isSafeKey, MAX_SEGMENT_LENGTH } from '../core/path-encoding.js'
import { fsSettings, start, tempDir } from './helpers.js'

const hostile = fc.oneof(
  fc.constantFrom('..', '.', '../..', '/', '//', '/etc/passwd', '..\\..\\windows', '\0', 'a/../../b', '.hidden', '~', '%2e%2e', '%', 'CON', ' '),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: fc.constantFrom('.', '/', '\\', '%', '\0', 'a', 'é', '\u202e'), maxLength: 30 }),
  fc.string({ minLength: 300, maxLength: 10_000, unit: fc.constantFrom('a', '/', '.', 'é') })
)

describe('encodeSegment', () => {
  it('always yields one safe, bounded, non-hidden path segment', () => {
    fc.assert(fc.property(hostile, (value) => {
      const segment = encodeSegment(value)
      expect(segment.length).toBeGreaterThan(0)
      expect(segment.length).toBeLessThanOrEqual(MAX_SEGMENT_LENGTH)
      expect(segment).toMatch(/^[A-Za-z0-9_%~-][A-Za-z0-9_.%~-]*$/)
      expect(isSafeKey(segment)).toBe(true)
    }), { numRuns: 2000 })
  })

  it('keeps distinct values distinct', () => {
    fc.assert(fc.property(hostile, hostile, (a, b) => {
      fc.pre(a !== b && !(a === '' && b === '\0') && !(a === '\0' && b === ''))
      expect(encodeSegment(a)).not.toBe(encodeSegment(b))
    }), { numRuns: 2000 })
  })

  it('is readable: plain names stay as they are, others decode back', () => {
    expect(encodeSegment('apinode-query')).toBe('apinode-query')
    expect(encodeSegment('rk-clvs-1')).toBe('rk-clvs-1')
    expect(encodeSegment('__Routed_Nowhere__')).toBe('__Routed_Nowhere__')
    expect(encodeSegment('a/b c')).toBe('a%2Fb%20c')
    expect(decodeURIComponent(encodeSegment('été/..'))).toBe('été/..')
    expect(encodeSegment('..')).toBe('%2E.')
  })
})

describe('hostile topics and routing keys over HTTP', () => {
  it('never write outside the destination root, and every event stays readable in its own folder', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ path: 'events' }), baseDir: dir })
    const root = resolve(dir, 'out', 'events')
    let n = 0
    await fc.assert(fc.asyncProperty(hostile, hostile, async (topic, routingKey) => {
      n++
      const res = await app.inject({ method: 'POST', url: '/events', payload: { topic, routingKey, n } })
      expect(res.statusCode).toBe(200)
    }), { numRuns: 150 })
    await app.close()
    const everything = await readdir(dir, { recursive: true, withFileTypes: true })
    const files = everything.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name))
    const outside = files.filter((f) => !f.startsWith(root + sep) && !f.startsWith(resolve(dir, 'data') + sep))
    expect(outside).toEqual([])
    const dataFiles = files.filter((f) => f.startsWith(root + sep))
    // <topic>/<routing-key>/YYYY/MM/DD/HH/<file>: exactly 7 levels, whatever the input.
    for (const f of dataFiles) expect(relative(root, f).split(sep)).toHaveLength(7)
    const { readEvents } = await import('./helpers.js')
    const events = await readEvents(root)
    expect(events).toHaveLength(n)
    for (const { file, record } of events) {
      const [topicFolder, keyFolder] = file.split('/')
      expect(topicFolder).toBe(encodeSegment(record.clientEvent.topic === '' ? '??UnknownTopic??' : record.clientEvent.topic))
      expect(keyFolder).toBe(encodeSegment(record.clientEvent.routingKey === '' ? '__Routed_Nowhere__' : record.clientEvent.routingKey))
    }
  })
})
