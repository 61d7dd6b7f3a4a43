import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createServer, request as httpRequest, Agent, type Server } from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { S3Connection } from '../plugins/s3/index.js'
import { spawnServer } from './child-server.js'
import { startS3, S3_COMPAT, S3_CREDENTIALS, type S3Emulator } from './emulators/s3.js'
import { listFiles, onCleanup, tempDir } from './helpers.js'

let s3: S3Emulator

beforeAll(async () => { s3 = await startS3(['shared']) })
afterAll(async () => { await s3.dispose() })

/** A small round-robin HTTP proxy on loopback that remembers which backend got each event id. */
async function roundRobin (backends: string[], served: Map<number, number>): Promise<string> {
  const agent = new Agent({ keepAlive: true })
  let next = 0
  const proxy: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const backend = next++ % backends.length
      const body = Buffer.concat(chunks)
      const out = httpRequest(`${backends[backend]}${req.url ?? '/'}`, { method: req.method, headers: req.headers, agent }, (answer) => {
        if ((answer.statusCode ?? 0) < 300) served.set(JSON.parse(body.toString()).id as number, backend)
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      out.on('error', () => { res.writeHead(502).end() })
      out.end(body)
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  onCleanup(async () => {
    agent.destroy()
    await new Promise((resolve) => proxy.close(resolve))
  })
  const { port } = proxy.address() as { port: number }
  return `http://127.0.0.1:${port}`
}

describe('several instances behind a load balancer', () => {
  it('two servers share a filesystem root and a bucket: no file or object written by both, every event exactly once', async () => {
    const dir = await tempDir()
    // Identical settings, as for N replicas; each instance keeps its own state folder.
    const write = async (state: string): Promise<string> => {
      const file = join(dir, `${state}.json`)
      await writeFile(file, JSON.stringify({
        server: { stateDir: `./${state}` },
        connections: {
          shared: { type: 'filesystem', root: './shared' },
          bucket: { type: 's3', bucket: 'shared', prefix: 'audit', endpoint: s3.endpoint, ...S3_CREDENTIALS, ...S3_COMPAT }
        },
        destinations: [
          { name: 'disk', connection: 'shared', flushEveryBytes: 4000 },
          { name: 'cloud', connection: 'bucket', flushEveryBytes: 4000, uploadRetryInitialS: 0.05 }
        ]
      }))
      return file
    }
    const a = await spawnServer(['--config', await write('state-a')], dir)
    const b = await spawnServer(['--config', await write('state-b')], dir)
    const served = new Map<number, number>()
    const url = await roundRobin([a.url, b.url], served)
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 600) {
        const id = next++
        const res = await fetch(`${url}/events/generic/rk-${id % 4}`, { method: 'POST', body: JSON.stringify({ id }), headers: { 'content-type': 'application/json' } })
        // On failure, say which answer and what the servers logged about it.
        if (res.status !== 200) expect({ status: res.status, body: await res.text(), logs: `${a.output()}\n${b.output()}`.split('\n').filter((l) => /"level":(40|50)/.test(l)) }).toEqual({ status: 200 })
      }
    }))
    a.process.kill('SIGTERM')
    b.process.kill('SIGTERM')
    expect([await a.exited, await b.exited]).toEqual([0, 0])
    expect(served.size).toBe(600)
    expect(new Set(served.values())).toEqual(new Set([0, 1]))

    const check = (files: Map<string, string>): void => {
      const seen = new Map<number, number>()
      for (const [name, text] of files) {
        const backends = new Set<number>()
        for (const line of text.trim().split('\n')) {
          const id = JSON.parse(line).clientEvent.id as number
          seen.set(id, (seen.get(id) ?? 0) + 1)
          backends.add(served.get(id) as number)
        }
        expect({ name, backends: backends.size }).toEqual({ name, backends: 1 })
      }
      expect([...seen.values()].every((n) => n === 1)).toBe(true)
      expect(seen.size).toBe(600)
    }
    const disk = new Map<string, string>()
    for (const f of await listFiles(join(dir, 'shared'))) disk.set(f, await readFile(join(dir, 'shared', f), 'utf8'))
    check(disk)
    const reader = new S3Connection({ bucket: 'shared', prefix: 'audit', endpoint: s3.endpoint, ...S3_CREDENTIALS, ...S3_COMPAT, partSizeBytes: 5 * 1024 * 1024, uploadConcurrency: 1, connectTimeoutS: 10, idleTimeoutS: 60 }, { name: 'reader' })
    const objects = new Map<string, string>()
    for await (const { key } of reader.list('')) {
      const chunks: Buffer[] = []
      for await (const chunk of await reader.read(key)) chunks.push(chunk as Buffer)
      objects.set(key, Buffer.concat(chunks).toString())
    }
    await reader.close()
    check(objects)
    const instances = new Set([...disk.keys(), ...objects.keys()].map((k) => (k.split('/').pop() as string).split('_')[0]))
    expect(instances.size).toBe(2)
  }, 60_000)
})
