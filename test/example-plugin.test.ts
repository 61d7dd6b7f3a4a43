import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { cp, mkdir, symlink, writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN, spawnServer } from './child-server.js'
import { onCleanup, tempDir } from './helpers.js'

const ROOT = join(import.meta.dirname, '..')
const EXAMPLE = join(import.meta.dirname, 'fixtures', 'dss-event-server-plugin-webhook')
const run = promisify(execFile)

/** A folder where the server and the example plugin are installed side by side, as npm would. */
async function install (): Promise<string> {
  const dir = await tempDir()
  const modules = join(dir, 'node_modules')
  await mkdir(join(modules, 'dss-event-server-plugin-webhook'), { recursive: true })
  for (const file of ['index.js', 'package.json']) await cp(join(EXAMPLE, file), join(modules, 'dss-event-server-plugin-webhook', file))
  // The plugin's peer dependencies: this package (its `plugin-api` export) and fastify-plugin.
  await symlink(ROOT, join(modules, 'dss-event-server'), 'dir')
  await symlink(join(ROOT, 'node_modules', 'fastify-plugin'), join(modules, 'fastify-plugin'), 'dir')
  return dir
}

/** The endpoint the webhook posts to: it records each POST and answers with `status`. */
async function endpoint (): Promise<{ url: string, posts: Array<{ headers: IncomingHttpHeaders, body: string }>, status: { code: number } }> {
  const posts: Array<{ headers: IncomingHttpHeaders, body: string }> = []
  const status = { code: 200 }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      posts.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
      res.statusCode = status.code
      res.end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onCleanup(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest`, posts, status }
}

describe('the example third-party plugin (test/fixtures/dss-event-server-plugin-webhook)', () => {
  it('installed as a package beside the server, receives events through the real server', async () => {
    const dir = await install()
    const target = await endpoint()
    await writeFile(join(dir, 'settings.yaml'), [
      'plugins: [dss-event-server-plugin-webhook]',
      'destinations:',
      `  - { name: siem, type: webhook, url: "${target.url}", authorization: "\${SIEM_TOKEN}", topicsFiltering: SELECTED, topics: [generic] }`
    ].join('\n'))
    const server = await spawnServer(['--config', join(dir, 'settings.yaml')], dir, { SIEM_TOKEN: 'Bearer t0ken' })
    const post = async (path: string, body: unknown): Promise<Response> =>
      await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

    const ok = await post('/events/generic/rk-1', [{ n: 1 }, { n: 2 }, { n: 3, topic: 'authfail' }])
    expect(ok.status).toBe(200)
    expect(await ok.json()).toEqual({ status: 'ok', received: 3, routed: 2 })
    // Answered only once the endpoint had them: one POST of NDJSON, the server's own envelope lines.
    expect(target.posts).toHaveLength(1)
    expect(target.posts[0]?.headers).toMatchObject({ 'content-type': 'application/x-ndjson', authorization: 'Bearer t0ken' })
    const lines = (target.posts[0]?.body ?? '').trimEnd().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((l) => l.clientEvent)).toEqual([{ n: 1 }, { n: 2 }])
    expect(lines[0]).toMatchObject({ origAddress: '127.0.0.1', serverTimestamp: expect.any(String) })

    // The endpoint fails: the client gets 503 and will send again; nothing is acknowledged.
    target.status.code = 502
    const refused = await post('/events/generic/rk-1', { n: 4 })
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    expect(await refused.json()).toMatchObject({ code: 'EVS_ERR_DESTINATION_UNAVAILABLE', error: expect.stringContaining('the endpoint answered HTTP 502') })

    const stats = await (await fetch(`${server.url}/stats`)).json() as { destinations: Record<string, unknown> }
    expect(stats.destinations.siem).toMatchObject({ eventsWritten: 2, pendingBytes: 0, ready: { ready: true }, details: { eventsSent: 2, postsFailed: 1 } })
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    expect(metrics).toContain('evs_webhook_posts_total{destination="siem"} 1')
    expect(metrics).toContain('evs_webhook_post_duration_seconds_count{destination="siem",outcome="failed"} 1')

    server.process.kill('SIGTERM')
    expect(await server.exited).toBe(0)
  })

  it('its options are validated at start-up, with its own checks', async () => {
    const dir = await install()
    await writeFile(join(dir, 'settings.yaml'), [
      'plugins: [dss-event-server-plugin-webhook]',
      'destinations:',
      '  - { name: a, type: webhook, url: "ftp://example.invalid/x" }',
      '  - { name: b, type: webhook, url: "http://example.invalid/x", timeoutS: 0, colour: blue }'
    ].join('\n'))
    const result = await run(process.execPath, [BIN, 'check', '--config', join(dir, 'settings.yaml')], { cwd: dir }).then(
      () => ({ code: 0, stderr: '' }), (err: { code: number, stderr: string }) => err)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('/destinations/0/url: expected an http:// or https:// URL, got "ftp:"')
    expect(result.stderr).toContain('/destinations/1/timeoutS: expected a number greater than 0, got 0')
    expect(result.stderr).toContain('/destinations/1/colour: unexpected property, got "blue"')
  })
})
