import { describe, expect, it } from 'vitest'
import { deflateRawSync, deflateSync, gzipSync } from 'node:zlib'
import pino from 'pino'
import { join } from 'node:path'
import { captureLogs, fsSettings, listFiles, readEvents, start, tempDir, TIMESTAMP } from './helpers.js'

async function server (destination: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const dir = await tempDir()
  const app = await start({ document: fsSettings(destination, extra), baseDir: dir })
  return { app, dir, out: join(dir, 'out') }
}

const audit = (n: number, extra: Record<string, unknown> = {}) => ({ msgType: 'application-open', authUser: `user${n}`, n, ...extra })

describe('ingestion through the HTTP server', () => {
  it('writes one JSON object as one envelope line under <path>/<topic>/<routing-key>/YYYY/MM/DD/HH', async () => {
    const { app, out } = await server()
    const res = await app.inject({ method: 'POST', url: '/events', payload: { topic: 'generic', routingKey: 'rk-1', ...audit(1) } })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toMatchObject({ status: 'ok', received: 1, routed: 1 })
    const events = await readEvents(out)
    expect(events).toHaveLength(1)
    const [{ file, record }] = events as [{ file: string, record: any }]
    expect(file).toMatch(/^events\/generic\/rk-1\/\d{4}\/\d{2}\/\d{2}\/\d{2}\/test-1_all_\d{10}\.jsonl$/)
    expect(Object.keys(record)).toEqual(['clientEvent', 'origAddress', 'serverTimestamp'])
    expect(record.clientEvent).toEqual({ topic: 'generic', routingKey: 'rk-1', ...audit(1) })
    expect(record.origAddress).toBe('127.0.0.1')
    expect(record.serverTimestamp).toMatch(TIMESTAMP)
    expect(record.serverTimestamp.endsWith('+0000')).toBe(true)
  })

  it('accepts a JSON array, NDJSON, text/plain and a missing content type', async () => {
    const { app, out } = await server()
    const array = [audit(1), audit(2)]
    expect((await app.inject({ method: 'POST', url: '/events/t/a', payload: array })).statusCode).toBe(200)
    const ndjson = `${JSON.stringify(audit(3))}\r\n\n${JSON.stringify(audit(4))}\n`
    expect((await app.inject({ method: 'POST', url: '/events/t/b', headers: { 'content-type': 'application/x-ndjson' }, payload: ndjson })).statusCode).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/events/t/c', headers: { 'content-type': 'text/plain; charset=utf-8' }, payload: JSON.stringify(audit(5)) })).statusCode).toBe(200)
    // NDJSON sent without saying so is recognised by its content.
    const res = await app.inject({ method: 'POST', url: '/events/t/d', payload: `${JSON.stringify(audit(6))}\n${JSON.stringify(audit(7))}` })
    expect(res.statusCode).toBe(200)
    expect(res.json().received).toBe(2)
    const events = await readEvents(out)
    expect(events.map((e) => e.record.clientEvent.n).sort()).toEqual([1, 2, 3, 4, 5, 6, 7])
    expect(new Set(events.map((e) => e.file.split('/')[2]))).toEqual(new Set(['a', 'b', 'c', 'd']))
  })

  it('keeps each event exactly as received (number formats, key order, big integers)', async () => {
    const { app, out } = await server()
    const raw = '[ {"b":1.50,"a":12345678901234567890,"s":"\\u00e9\\n"} ,\n {"x":[1,{"y":"]"}]} ]'
    expect((await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: raw })).statusCode).toBe(200)
    const files = await listFiles(out)
    const { readFile } = await import('node:fs/promises')
    const text = await readFile(join(out, files[0] as string), 'utf8')
    const lines = text.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^\{"clientEvent":\{"b":1\.50,"a":12345678901234567890,"s":"\\u00e9\\n"\},"origAddress"/)
    expect(lines[1]).toMatch(/^\{"clientEvent":\{"x":\[1,\{"y":"\]"\}\]\},"origAddress"/)
  })

  it('decodes gzip request bodies', async () => {
    const { app, out } = await server()
    const body = gzipSync([audit(1), audit(2), audit(3)].map((e) => JSON.stringify(e)).join('\n'))
    const res = await app.inject({ method: 'POST', url: '/events/g/r', headers: { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' }, payload: body })
    expect(res.statusCode).toBe(200)
    expect(await readEvents(out)).toHaveLength(3)
  })

  it('decodes deflate request bodies, zlib-wrapped or bare', async () => {
    const { app, out } = await server()
    const text = [audit(1), audit(2)].map((e) => JSON.stringify(e)).join('\n')
    for (const payload of [deflateSync(text), deflateRawSync(text)]) {
      const res = await app.inject({ method: 'POST', url: '/events/t/r', headers: { 'content-type': 'application/x-ndjson', 'content-encoding': 'deflate' }, payload })
      expect(res.statusCode).toBe(200)
    }
    expect(await readEvents(out)).toHaveLength(4)
    const bad = await app.inject({ method: 'POST', url: '/events/t/r', headers: { 'content-encoding': 'deflate' }, payload: 'not deflate' })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().code).toBe('EVS_ERR_BODY_GZIP_INVALID')
  })

  it('an empty array is a valid batch of no event: 200 with received 0, nothing written', async () => {
    const { app, out } = await server()
    const res = await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: ' [ ] ' })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ status: 'ok', received: 0, routed: 0 })
    expect(await listFiles(out)).toEqual([])
  })

  it('keeps topics with lone surrogates and U+FFFD apart', async () => {
    const { app, out } = await server()
    const payload = '[{"topic":"\\ud800","n":1},{"topic":"\\udc00","n":2},{"topic":"\\ufffd","n":3},{"topic":"\\ud83d\\ude00","n":4}]'
    expect((await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload })).statusCode).toBe(200)
    const folders = new Map((await readEvents(out)).map((e) => [e.record.clientEvent.n, e.file.split('/')[1]]))
    expect(new Set(folders.values()).size).toBe(4)
    expect(folders.get(3)).toBe('%EF%BF%BD')
    expect(decodeURIComponent(folders.get(4) as string)).toBe('😀')
  })

  it('logs a request that matches no route at warn: method, path, content type and header names, never their values or the body', async () => {
    const dir = await tempDir()
    const { stream, logs } = captureLogs()
    const app = await start({ document: fsSettings(), baseDir: dir, loggerInstance: pino({ level: 'info' }, stream) })
    const res = await app.inject({
      method: 'POST',
      url: '/api/audit?token=query-secret',
      headers: { 'content-type': 'application/json', authorization: 'Bearer header-secret', 'x-custom': 'value-secret' },
      payload: '{"authUser":"body-secret"}'
    })
    expect(res.statusCode).toBe(404)
    expect(res.json().code).toBe('EVS_ERR_ROUTE_NOT_FOUND')
    const line = logs.lines.map((l) => JSON.parse(l)).find((l) => l.level === 40)
    expect(line).toMatchObject({ method: 'POST', url: '/api/audit', contentType: 'application/json', headerNames: expect.arrayContaining(['authorization', 'x-custom']) })
    expect(logs.text()).not.toMatch(/secret/)
  })

  it('takes topic and routing key from body fields, then query parameters, then the path, then DSS placeholders', async () => {
    const { app, out } = await server()
    await app.inject({ method: 'POST', url: '/events/pathTopic/pathKey?topic=queryTopic', payload: [{ n: 1 }, { n: 2, auditTopic: 'bodyTopic', auditRoutingKey: 'bodyKey' }] })
    await app.inject({ method: 'POST', url: '/events', payload: { n: 3 } })
    await app.inject({ method: 'POST', url: '/events?routingKey=qk', payload: { n: 4, topic: 'apicalls' } })
    const byN = Object.fromEntries((await readEvents(out)).map((e) => [e.record.clientEvent.n, e.file.split('/').slice(1, 3).join('/')]))
    expect(byN).toEqual({
      1: 'queryTopic/pathKey',
      2: 'bodyTopic/bodyKey',
      3: '%3F%3FUnknownTopic%3F%3F/__Routed_Nowhere__',
      4: 'apicalls/qk'
    })
  })

  describe('bad input gets a clear 4xx and writes nothing of the request', () => {
    it.each([
      ['malformed JSON', { payload: '{"a":1,}', headers: { 'content-type': 'application/json' } }, 400, 'EVS_ERR_BODY_INVALID_JSON', /Invalid JSON/],
      ['a bad NDJSON line, by number', { payload: '{"a":1}\n{"b":2}\n{"c":', headers: { 'content-type': 'application/x-ndjson' } }, 400, 'EVS_ERR_BODY_INVALID_JSON', /at line 3/],
      ['a non-object array element, by index', { payload: '[{"a":1},42]', headers: { 'content-type': 'application/json' } }, 400, 'EVS_ERR_BODY_NOT_OBJECT', /array element 1 is a number/],
      ['a scalar body', { payload: '"hello"', headers: { 'content-type': 'application/json' } }, 400, 'EVS_ERR_BODY_NOT_OBJECT', /the body is a string/],
      ['an empty body', { payload: '  \n', headers: { 'content-type': 'application/json' } }, 400, 'EVS_ERR_BODY_EMPTY', /no event/],
      ['an unsupported media type', { payload: '<a/>', headers: { 'content-type': 'application/xml' } }, 415, 'EVS_ERR_MEDIA_TYPE_UNSUPPORTED', /application\/xml/],
      ['an unsupported content encoding', { payload: '{}', headers: { 'content-type': 'application/json', 'content-encoding': 'br' } }, 415, 'EVS_ERR_BODY_ENCODING_UNSUPPORTED', /br/],
      ['bad gzip', { payload: 'not gzip at all', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } }, 400, 'EVS_ERR_BODY_GZIP_INVALID', /cannot be decoded/]
    ])('%s', async (_name, request, status, code, message) => {
      const { app, out } = await server()
      const res = await app.inject({ method: 'POST', url: '/events', ...request })
      expect(res.statusCode).toBe(status)
      expect(res.json().code).toBe(code)
      expect(res.json().error).toMatch(message)
      expect(await listFiles(out)).toEqual([])
    })

    it('413 for a body over server.bodyLimit, before and after gzip decoding', async () => {
      const { app, out } = await server({}, { server: { bodyLimit: 2048 } })
      const big = JSON.stringify({ pad: 'x'.repeat(4000) })
      const raw = await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: big })
      expect(raw.statusCode).toBe(413)
      expect(raw.json().code).toBe('EVS_ERR_BODY_TOO_LARGE')
      const bomb = gzipSync(JSON.stringify({ pad: 'x'.repeat(100_000) }))
      expect(bomb.length).toBeLessThan(2048)
      const zipped = await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, payload: bomb })
      expect(zipped.statusCode).toBe(413)
      expect(await listFiles(out)).toEqual([])
    })
  })

  it('answers over a real socket', async () => {
    const { app, out } = await server()
    const address = await app.listen({ host: '127.0.0.1', port: 0 })
    const res = await fetch(`${address}/events/generic/rk`, { method: 'POST', body: JSON.stringify(audit(1)), headers: { 'content-type': 'application/json' } })
    expect(res.status).toBe(200)
    const events = await readEvents(out)
    expect(events[0]?.record.origAddress).toBe('127.0.0.1')
  })

  describe('sender address', () => {
    it('ignores X-Forwarded-For and x-dss-nginx-client-ip from untrusted peers', async () => {
      const { app, out } = await server()
      await app.inject({ method: 'POST', url: '/events', headers: { 'x-forwarded-for': '10.1.1.1', 'x-dss-nginx-client-ip': '10.2.2.2' }, payload: audit(1) })
      expect((await readEvents(out))[0]?.record.origAddress).toBe('127.0.0.1')
    })

    it('honours them from configured trusted proxies', async () => {
      const { app, out } = await server({}, { server: { trustedProxies: ['127.0.0.1'] } })
      await app.inject({ method: 'POST', url: '/events/a/b', headers: { 'x-forwarded-for': '10.1.1.1' }, payload: audit(1) })
      await app.inject({ method: 'POST', url: '/events/a/c', headers: { 'x-forwarded-for': '10.1.1.1', 'x-dss-nginx-client-ip': '10.2.2.2' }, payload: audit(2) })
      const byN = Object.fromEntries((await readEvents(out)).map((e) => [e.record.clientEvent.n, e.record.origAddress]))
      expect(byN).toEqual({ 1: '10.1.1.1', 2: '10.2.2.2' })
    })
  })

  it('writes serverTimestamp with the configured time zone offset', async () => {
    const dir = await tempDir()
    const at = Date.UTC(2026, 6, 1, 22, 30, 15, 7) // summer time in Paris: +0200
    const app = await start({ document: fsSettings({}, { server: { instanceId: 'tz', timeZone: 'Europe/Paris' } }), baseDir: dir, now: () => at })
    await app.inject({ method: 'POST', url: '/events/t/r', payload: audit(1) })
    const [event] = await readEvents(join(dir, 'out'))
    expect(event?.record.serverTimestamp).toBe('2026-07-02T00:30:15.007+0200')
    expect(event?.file).toMatch(/^events\/t\/r\/2026\/07\/02\/00\//)
  })
})
