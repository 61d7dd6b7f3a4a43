import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN } from './child-server.js'
import { fsSettings, readEvents, start, tempDir } from './helpers.js'
import { parseDuration } from '../cli/parse-duration.js'

async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return await promisify(execFile)(process.execPath, [BIN, ...args])
    .then(({ stdout, stderr }) => ({ code: 0, stdout, stderr }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }))
}

describe('dss-event-server send', () => {
  it('sends DSS-shaped events in batches at a rate, and summarises what was acknowledged', async () => {
    const dir = await tempDir()
    const app = await start({ document: fsSettings({}, { security: { eventsAuthenticationKeys: [{ key: 'node-key' }], requireAuthenticationForEvents: true } }), baseDir: dir })
    const url = await app.listen({ host: '127.0.0.1', port: 0 })
    const ok = await cli(['send', '--url', url, '--key', 'node-key', '--count', '300', '--batch', '10', '--rate', '3000', '--routing-key', 'rk-test'])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/sent +300 events in 30 requests/)
    expect(ok.stdout).toMatch(/acknowledged +300 events/)
    expect(ok.stdout).toMatch(/rejected +none/)
    expect(ok.stdout).toMatch(/latency +p50 [\d.]+ ms, p99 [\d.]+ ms/)
    const events = await readEvents(join(dir, 'out'))
    expect(events).toHaveLength(300)
    expect(new Set(events.map((e) => e.file.split('/')[2]))).toEqual(new Set(['rk-test']))
    expect(events[0]?.record.clientEvent).toMatchObject({ msgType: expect.any(String), authUser: expect.any(String), clientIP: expect.any(String) })
    expect(Buffer.byteLength(JSON.stringify(events[0]?.record.clientEvent))).toBeGreaterThan(400)

    const refused = await cli(['send', '--url', url, '--key', 'wrong', '--duration', '300ms', '--topic', 'generic', '--concurrency', '2'])
    expect(refused.code).toBe(1)
    expect(refused.stdout).toMatch(/acknowledged +0 events/)
    expect(refused.stdout).toMatch(/rejected +\d+ requests with 401/)
  })

  it('reports a server that cannot be reached as errors, and explains bad options', async () => {
    const down = await cli(['send', '--url', 'http://127.0.0.1:9', '--count', '3'])
    expect(down.code).toBe(1)
    expect(down.stdout).toMatch(/errors +3 \(last: .*ECONNREFUSED/)
    const bad = await cli(['send', '--url', 'http://127.0.0.1:9', '--duration', 'soon'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('--duration expects e.g. 30s')
  })

  it('parses durations', () => {
    expect(parseDuration('30s')).toBe(30)
    expect(parseDuration('2m')).toBe(120)
    expect(parseDuration('500ms')).toBe(0.5)
    expect(parseDuration('7')).toBe(7)
    expect(parseDuration('x')).toBeUndefined()
  })
})
