import { describe, expect, it } from 'vitest'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import pino from 'pino'
import { generate } from 'selfsigned'
import { captureLogs, fsSettings, readEvents, start, tempDir } from './helpers.js'
import { spawnServer } from './child-server.js'

async function eventually (check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

describe('statistics and metrics', () => {
  async function trafficked (extra: Record<string, unknown> = {}) {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ flushEveryBytes: 0 }, extra), baseDir: dir })
    const ok = async (payload: unknown, url = '/events') => {
      const res = await app.inject({ method: 'POST', url, payload: payload as object, headers: extra.security !== undefined ? { authorization: 'Bearer ev-key' } : {} })
      expect(res.statusCode).toBe(200)
    }
    await ok([{ topic: 'generic', routingKey: 'secret-rk-123' }, { topic: 'generic' }])
    await ok({ topic: 'authfail' })
    await ok({ n: 1 }, '/events/apinode-query/rk-svc')
    await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: '{"bad"' })
    await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: '{"bad"' })
    await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/xml' }, payload: '<a/>' })
    // A file is completed just after the commit that acknowledged its events.
    await eventually(async () => (await app.inject({ method: 'GET', url: '/stats' })).json().destinations.all.details.filesCompleted === 4, 'files completed')
    return { app, dir }
  }

  it('/stats reports events by topic, rejections by reason, and per-destination figures', async () => {
    const { app } = await trafficked()
    const res = await app.inject({ method: 'GET', url: '/stats' })
    expect(res.statusCode).toBe(200)
    const stats = res.json()
    expect(stats.instanceId).toBe('test-1')
    expect(stats.uptimeS).toBeGreaterThanOrEqual(0)
    expect(stats.events).toMatchObject({
      received: 4,
      accepted: 4,
      rejected: 0,
      byTopic: { generic: { received: 2, accepted: 2 }, authfail: { received: 1, accepted: 1 }, 'apinode-query': { received: 1, accepted: 1 } }
    })
    expect(stats.requests).toEqual({ accepted: 3, rejected: 3, rejectedByReason: { EVS_ERR_BODY_INVALID_JSON: 2, EVS_ERR_MEDIA_TYPE_UNSUPPORTED: 1 } })
    expect(stats.destinations.all).toMatchObject({ eventsWritten: 4, pendingBytes: 0, oldestPendingAgeS: null, details: { filesCompleted: 4, openFiles: 0 } })
    expect(stats.destinations.all.bytesWritten).toBeGreaterThan(200)
    expect(stats.lastError).toBeNull()
  })

  it('/stats keeps every topic, whatever characters it holds (its answer schema must not drop one)', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings(), baseDir: dir })
    const res = await app.inject({ method: 'POST', url: '/events', payload: [{ topic: 'line\nbreak' }, { topic: 'émoji 🎉' }] })
    expect(res.statusCode).toBe(200)
    const stats = (await app.inject({ method: 'GET', url: '/stats' })).json()
    expect(stats.events.byTopic).toEqual({ 'line\nbreak': { received: 1, accepted: 1 }, 'émoji 🎉': { received: 1, accepted: 1 } })
  })

  it('/metrics exposes the same figures in Prometheus format, never with routing keys as labels', async () => {
    const { app } = await trafficked()
    const res = await app.inject({ method: 'GET', url: '/metrics' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain/)
    const text = res.body
    expect(text).toContain('evs_events_accepted_total{topic="generic"} 2')
    expect(text).toContain('evs_requests_rejected_total{reason="EVS_ERR_BODY_INVALID_JSON"} 2')
    expect(text).toContain('evs_destination_events_total{destination="all"} 4')
    expect(text).toContain('evs_files_completed_total{destination="all"} 4')
    expect(text).toMatch(/evs_fsync_duration_seconds_count\{destination="all"\} [1-9]/)
    expect(text).toMatch(/evs_request_duration_seconds_count\{outcome="accepted"\} 3/)
    expect(text).toMatch(/evs_request_duration_seconds_count\{outcome="rejected"\} 3/)
    expect(text).toContain('evs_open_files{destination="all"} 0')
    expect(text).not.toContain('secret-rk-123')
    expect(text).not.toContain('rk-svc')
  })

  it('bounds topic labels: past the cap, topics are counted as "other"', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ folderByTopic: false, folderByRoutingKey: false }), baseDir: dir })
    await app.inject({ method: 'POST', url: '/events', payload: Array.from({ length: 120 }, (_, i) => ({ topic: `t${i}` })) })
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
    const labels = text.split('\n').filter((l) => l.startsWith('evs_events_accepted_total{'))
    expect(labels.length).toBeLessThanOrEqual(57)
    expect(text).toMatch(/evs_events_accepted_total\{topic="other"\} 70/)
  })

  it('protects /stats and /metrics with the stats keys when requireAuthenticationForStats is set', async () => {
    const dir = await tempDir()
    const app = await start({
      document: fsSettings({}, { security: { requireAuthenticationForStats: true, statsAuthenticationKeys: [{ key: 'stats-key' }], eventsAuthenticationKeys: [{ key: 'ev-key' }] } }),
      baseDir: dir
    })
    for (const url of ['/stats', '/metrics']) {
      expect((await app.inject({ method: 'GET', url })).statusCode).toBe(401)
      expect((await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer ev-key' } })).statusCode).toBe(401)
      expect((await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer stats-key' } })).statusCode).toBe(200)
    }
    // Health and readiness stay open: load balancers probe them.
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200)
  })

  it('records the last error with its time', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings(), baseDir: dir })
    await mkdir(join(dir, 'out', 'events'), { recursive: true })
    await writeFile(join(dir, 'out', 'events', 'blocked'), 'a file where a folder must go')
    expect((await app.inject({ method: 'POST', url: '/events/blocked/r', payload: { a: 1 } })).statusCode).toBe(503)
    const stats = (await app.inject({ method: 'GET', url: '/stats' })).json()
    expect(stats.lastError).toMatchObject({ where: 'destination all', message: expect.stringMatching(/EEXIST|ENOTDIR/) })
    expect(Date.parse(stats.lastError.at)).toBeGreaterThan(0)
    expect(stats.events.rejectedByReason).toEqual({ EVS_ERR_DESTINATION_UNAVAILABLE: 1 })
  })
})

describe('health and readiness', () => {
  it('/ready flips to 503 when a destination folder becomes unwritable, and back', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({ healthCheckIntervalS: 0.05 }), baseDir: dir })
    expect((await app.inject({ method: 'GET', url: '/health' })).json()).toEqual({ status: 'ok' })
    expect((await app.inject({ method: 'GET', url: '/ready' })).json()).toEqual({ ready: true, reasons: [], destinations: { all: 'ready' } })
    const folder = join(dir, 'out', 'events')
    await rm(folder, { recursive: true, force: true })
    await writeFile(folder, 'not a folder')
    await eventually(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 503, 'not ready')
    const notReady = await app.inject({ method: 'GET', url: '/ready' })
    expect(notReady.headers['retry-after']).toBe('5')
    expect(notReady.json().reasons[0]).toMatch(/^destination all: cannot write: (EEXIST|ENOTDIR)/)
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200)
    await rm(folder)
    await eventually(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 200, 'ready again')
  })
})

describe('back-pressure on memory', () => {
  it('answers 503 with Retry-After past server.maxInFlightBytes, and recovers', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({}, { server: { maxInFlightBytes: 4096 } }), baseDir: dir })
    const url = await app.listen({ host: '127.0.0.1', port: 0 })
    // A slow request holding 3 kB in flight (bytes count as they arrive)...
    const body = JSON.stringify({ pad: 'x'.repeat(3000) })
    let finish = (): void => {}
    const slow = new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${url}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(body.length) } }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.write(body.slice(0, -10))
      finish = () => req.end(body.slice(-10))
    })
    await eventually(async () => (await app.inject({ method: 'GET', url: '/stats' })).json().inFlightBytes > 2000, 'the slow request to be counted')
    // ...so another 3 kB does not fit.
    const refused = await app.inject({ method: 'POST', url: '/events/t/r', headers: { 'content-type': 'application/json' }, payload: body })
    expect(refused.statusCode).toBe(503)
    expect(refused.headers['retry-after']).toBe('5')
    expect(refused.json()).toMatchObject({ code: 'EVS_ERR_OVERLOADED', error: expect.stringContaining('maxInFlightBytes') })
    finish()
    expect(await slow).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/events/t/r', headers: { 'content-type': 'application/json' }, payload: body })).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/stats' })).json().inFlightBytes).toBe(0)
  })

  it('a request whose client left while it waited to be durable holds its lines until written, then releases them', async () => {
    const dir = await tempDir()
    const fixture = join(import.meta.dirname, 'fixtures', 'dss-event-server-plugin-capture', 'index.js')
    const { captured } = await import(fixture) as { captured: Map<string, { waiting: number, release: () => void, events: unknown[] }> }
    const app = await start({ baseDir: dir, document: { plugins: [fixture], destinations: [{ name: 'held', type: 'capture', hold: true }] } })
    const url = await app.listen({ host: '127.0.0.1', port: 0 })
    const body = JSON.stringify({ pad: 'x'.repeat(3000) })
    // The whole body is sent, then the client goes away while the destination holds the request.
    const req = httpRequest(`${url}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(body.length) } })
    req.on('error', () => {})
    req.end(body)
    await eventually(() => captured.get('held')?.waiting === 1, 'the request to wait on its destination')
    const stats = async (): Promise<number> => (await app.inject({ method: 'GET', url: '/stats' })).json().inFlightBytes
    // What is held is the request's lines (its body with the envelope), still in memory.
    expect(await stats()).toBeGreaterThan(body.length)
    req.destroy()
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(await stats()).toBeGreaterThan(body.length)
    captured.get('held')?.release()
    await eventually(() => captured.get('held')?.events.length === 1, 'the held event to be accepted')
    await eventually(async () => await stats() === 0, 'the bytes of the abandoned request to be released')
    // Its settings version was released too: closing does not wait for it.
    await app.close()
  })
})

describe('logs', () => {
  it('logs rejected requests at a bounded rate, saying how many were left out, never the body', async () => {
    const dir = await tempDir()
    const { stream, logs } = captureLogs()
    const clock = { t: Date.UTC(2026, 10, 26) }
    const app = await start({ document: fsSettings(), baseDir: dir, loggerInstance: pino({ level: 'info' }, stream), now: () => clock.t })
    for (let i = 0; i < 300; i++) {
      await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: `{"secret-body-${i}"` })
    }
    clock.t += 1000 // room for 10 more lines
    await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: '{"last"' })
    const rejected = logs.lines.filter((l) => l.includes('request rejected')).map((l) => JSON.parse(l))
    expect(rejected).toHaveLength(51) // a burst of 50, then the one after the pause
    expect(rejected[0]).toMatchObject({ code: 'EVS_ERR_BODY_INVALID_JSON', statusCode: 400, url: '/events' })
    expect(rejected.at(-1).suppressedSinceLastLine).toBe(250)
    expect(logs.text()).not.toContain('secret-body')
  })

  it('--pretty writes human-readable logs', async () => {
    const dir = await tempDir()
    const server = await spawnServer(['--pretty'], dir)
    server.process.kill('SIGTERM')
    await server.exited
    expect(server.output()).toMatch(/INFO.*dss-event-server is ready/)
    expect(server.output()).not.toMatch(/^\{"level"/m)
  })
})

describe('hot reload', () => {
  async function fileServer (settings: Record<string, unknown>) {
    const dir = await tempDir()
    const file = join(dir, 'settings.json')
    await writeFile(file, JSON.stringify(settings))
    const { stream, logs } = captureLogs()
    const app = await start({ settingsFile: file, loggerInstance: pino({ level: 'info' }, stream) } as never)
    return { app, dir, file, logs }
  }

  it('re-reads the settings file and swaps destinations; an invalid file is rejected with its reasons and the old settings kept', async () => {
    const { app, dir, file, logs } = await fileServer(fsSettings())
    await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })
    await writeFile(file, JSON.stringify({
      ...fsSettings(),
      destinations: [{ name: 'all', connection: 'local', path: 'events' }, { name: 'copy', connection: 'local', path: 'copy' }]
    }))
    const result = await app.eventServer.reload()
    expect(result.warnings).toEqual([])
    expect([...app.eventServer.destinations.keys()]).toEqual(['all', 'copy'])
    await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 2 } })

    await writeFile(file, JSON.stringify({ ...fsSettings(), destinations: [{ name: 'all', connection: 'nowhere' }] }))
    await expect(app.eventServer.reload()).rejects.toMatchObject({ code: 'EVS_ERR_RELOAD_REJECTED', message: expect.stringContaining('/destinations/0/connection') })
    expect(logs.text()).toContain('reload rejected, the running settings are kept')
    expect([...app.eventServer.destinations.keys()]).toEqual(['all', 'copy'])
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 3 } })).statusCode).toBe(200)
    await app.close()
    const events = await readEvents(join(dir, 'out'))
    const where = events.map((e) => `${e.file.split('/')[0]}:${e.record.clientEvent.n}`).sort()
    expect(where).toEqual(['copy:2', 'copy:3', 'events:1', 'events:2', 'events:3'])
  })

  it('says which changes need a restart', async () => {
    const { app, file } = await fileServer(fsSettings())
    await writeFile(file, JSON.stringify(fsSettings({}, { server: { instanceId: 'other', port: 1234 } })))
    const { warnings } = await app.eventServer.reload()
    expect(warnings).toEqual(['server.port changed: it takes effect at the next restart', 'server.instanceId changed: it takes effect at the next restart'])
  })

  it('POST /admin/reload reloads with an admin key, and is off without admin keys', async () => {
    const off = await fileServer(fsSettings())
    expect((await off.app.inject({ method: 'POST', url: '/admin/reload' })).statusCode).toBe(404)
    const on = await fileServer(fsSettings({}, { security: { adminAuthenticationKeys: [{ key: 'admin-key' }], eventsAuthenticationKeys: [{ key: 'ev-key' }] } }))
    expect((await on.app.inject({ method: 'POST', url: '/admin/reload' })).statusCode).toBe(401)
    expect((await on.app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: 'Bearer ev-key' } })).statusCode).toBe(401)
    const res = await on.app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: 'Bearer admin-key' } })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toMatchObject({ status: 'reloaded', destinations: ['all'] })
    await writeFile(on.file, '{ not json')
    const rejected = await on.app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: 'Bearer admin-key' } })
    expect(rejected.statusCode).toBe(400)
    expect(rejected.json().code).toBe('EVS_ERR_RELOAD_REJECTED')
  })

  it('SIGHUP under concurrent traffic: every acknowledged event is written exactly once', async () => {
    const dir = await tempDir()
    const file = join(dir, 'settings.json')
    await writeFile(file, JSON.stringify(fsSettings()))
    const server = await spawnServer(['--config', file], dir)
    const acked: number[] = []
    let next = 0
    let stop = false
    const worker = async (): Promise<void> => {
      while (!stop) {
        const id = next++
        const res = await fetch(`${server.url}/events/t/r${id % 7}`, { method: 'POST', body: JSON.stringify({ id }), headers: { 'content-type': 'application/json' } })
        if (res.status === 200) acked.push(id)
        else throw new Error(`status ${res.status}: ${await res.text()}`)
      }
    }
    const workers = Array.from({ length: 8 }, async () => await worker())
    await eventually(() => acked.length > 200, 'traffic')
    for (let round = 0; round < 3; round++) {
      await writeFile(file, JSON.stringify({
        ...fsSettings(),
        destinations: [{ name: 'all', connection: 'local', path: 'events', flushEveryBytes: 2000 + round }]
      }))
      const before = acked.length
      server.process.kill('SIGHUP')
      await eventually(() => server.output().split('settings reloaded').length > round + 1, `reload ${round + 1}`)
      await eventually(() => acked.length > before + 100, 'traffic after the reload')
    }
    stop = true
    await Promise.all(workers)
    server.process.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    const counts = new Map<number, number>()
    for (const { record } of await readEvents(join(dir, 'out'))) counts.set(record.clientEvent.id, (counts.get(record.clientEvent.id) ?? 0) + 1)
    expect(acked.filter((id) => counts.get(id) !== 1)).toEqual([])
    expect([...counts.keys()].length).toBe(acked.length)
  })
})

describe('TLS', () => {
  it('serves HTTPS with the configured certificate, and requires client certificates when a CA is set', async () => {
    const dir = await tempDir()
    const server = await generate([{ name: 'commonName', value: 'localhost' }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }, { type: 2, value: 'localhost' }] }]
    } as never)
    await writeFile(join(dir, 'cert.pem'), server.cert)
    await writeFile(join(dir, 'key.pem'), server.private)
    const app = await start({ document: fsSettings({}, { server: { tls: { cert: 'cert.pem', key: 'key.pem' } } }), baseDir: dir })
    const address = await app.listen({ host: '127.0.0.1', port: 0 })
    expect(address.startsWith('https://')).toBe(true)
    const post = async (options: Record<string, unknown>): Promise<number> => await new Promise((resolve, reject) => {
      const req = httpsRequest(`${address}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json' }, ...options }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end('{"tls":true}')
    })
    expect(await post({ ca: server.cert })).toBe(200)
    await expect(post({})).rejects.toThrow(/self-signed|self signed/)
    expect((await readEvents(join(dir, 'out')))[0]?.record.clientEvent).toEqual({ tls: true })
    await app.close()

    // With a CA, only clients holding a certificate it signed get in.
    const ca = await generate([{ name: 'commonName', value: 'test CA' }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true }]
    } as never)
    const client = await generate([{ name: 'commonName', value: 'dss-node' }], { keySize: 2048, algorithm: 'sha256', ca: { key: ca.private, cert: ca.cert } } as never)
    await writeFile(join(dir, 'ca.pem'), ca.cert)
    const mutual = await start({ document: fsSettings({}, { server: { tls: { cert: 'cert.pem', key: 'key.pem', ca: 'ca.pem' } } }), baseDir: dir })
    const mutualAddress = await mutual.listen({ host: '127.0.0.1', port: 0 })
    const postTo = async (options: Record<string, unknown>): Promise<number> => await new Promise((resolve, reject) => {
      const req = httpsRequest(`${mutualAddress}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json' }, ca: server.cert, ...options }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end('{"mtls":true}')
    })
    expect(await postTo({ cert: client.cert, key: client.private })).toBe(200)
    await expect(postTo({})).rejects.toThrow()
    await expect(postTo({ cert: server.cert, key: server.private })).rejects.toThrow()
  })

  it('re-reads the certificate files on reload: renewed certificates apply to new connections', async () => {
    const dir = await tempDir()
    const make = async () => await generate([{ name: 'commonName', value: 'localhost' }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }]
    } as never)
    const first = await make()
    const renewed = await make()
    await writeFile(join(dir, 'cert.pem'), first.cert)
    await writeFile(join(dir, 'key.pem'), first.private)
    const file = join(dir, 'settings.json')
    await writeFile(file, JSON.stringify(fsSettings({}, { server: { tls: { cert: 'cert.pem', key: 'key.pem' } } })))
    const app = await start({ settingsFile: file, logger: false } as never)
    const address = await app.listen({ host: '127.0.0.1', port: 0 })
    const post = async (ca: string): Promise<number> => await new Promise((resolve, reject) => {
      const req = httpsRequest(`${address}/events/t/r`, { method: 'POST', headers: { 'content-type': 'application/json' }, ca, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end('{"a":1}')
    })
    expect(await post(first.cert)).toBe(200)
    await writeFile(join(dir, 'cert.pem'), renewed.cert)
    await writeFile(join(dir, 'key.pem'), renewed.private)
    await app.eventServer.reload()
    expect(await post(renewed.cert)).toBe(200)
    await expect(post(first.cert)).rejects.toThrow()
  })
})
