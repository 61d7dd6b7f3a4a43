import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { S3Connection, type S3Options } from '../plugins/s3/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { describeObjectStoreDestination } from './conformance/describe-object-store-destination.js'
import { describeIntegrity } from './conformance/describe-integrity.js'
import { describeQuery } from './conformance/describe-query.js'
import type { Connection } from '../core/connection.js'
import { startS3, S3_COMPAT, S3_CREDENTIALS, S3RVER_SHALLOW_FOLDERS, type S3Emulator } from './emulators/s3.js'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN } from './child-server.js'
import { tempDir } from './helpers.js'
import { checkSettings } from '../index.js'
import { startProxy } from './emulators/proxy.js'

let s3: S3Emulator

beforeAll(async () => {
  s3 = await startS3(['evs', 'other'])
})

afterAll(async () => {
  await s3.dispose()
})

function options (extra: Partial<S3Options> = {}): S3Options {
  return {
    bucket: 'evs',
    prefix: `conf-${randomBytes(4).toString('hex')}/`,
    endpoint: s3.endpoint,
    ...S3_CREDENTIALS,
    ...S3_COMPAT,
    partSizeBytes: 5 * 1024 * 1024,
    uploadConcurrency: 2,
    connectTimeoutS: 10,
    idleTimeoutS: 60,
    ...extra
  }
}

describeConnection('s3 (s3rver)', {
  create: async () => new S3Connection(options(), { name: 's3' }),
  shallowFolderListing: S3RVER_SHALLOW_FOLDERS,
  observed: ({ url }) => new S3Connection(options({ endpoint: url }), { name: 's3' })
})

describe('s3 connection', () => {
  it('makes no network call at construction, even with an unreachable endpoint', async () => {
    const connection = new S3Connection(options({ endpoint: 'http://127.0.0.1:9' }), { name: 's3' })
    await expect(connection.check()).rejects.toThrow()
    await connection.close()
  })

  it('marks a missing bucket as permanent, so the file is quarantined instead of retried', async () => {
    const connection = new S3Connection(options({ bucket: 'no-such-bucket' }), { name: 's3' })
    await expect(connection.put('a/b', Buffer.from('x'))).rejects.toMatchObject({ permanent: true })
    await connection.close()
  })

  it('`check --connections` reports per connection whether a probe can be written and deleted, with the store\'s message', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'settings.json'), JSON.stringify({
      connections: {
        disk: { type: 'filesystem', root: './out' },
        good: { type: 's3', ...options() },
        missing: { type: 's3', ...options({ bucket: 'no-such-bucket' }) }
      },
      destinations: [{ name: 'd', connection: 'disk' }]
    }))
    const result = await promisify(execFile)(process.execPath, [BIN, 'check', '--config', join(dir, 'settings.json'), '--connections'], { cwd: dir })
      .then(({ stdout }) => ({ code: 0, stdout }), (err: { code: number, stdout: string }) => ({ code: err.code, stdout: err.stdout }))
    expect(result.code).toBe(1)
    expect(result.stdout).toContain('connection disk (filesystem): ok')
    expect(result.stdout).toContain('connection good (s3): ok')
    expect(result.stdout).toMatch(/connection missing \(s3\): FAILED: .*bucket does not exist/i)
  })

  it('keeps keys under its prefix', async () => {
    const connection = new S3Connection(options({ prefix: 'some/prefix' }), { name: 's3' })
    await connection.put('k/1', Buffer.from('x'))
    const root = new S3Connection(options({ prefix: '' }), { name: 's3' })
    const keys: string[] = []
    for await (const info of root.list('some/')) keys.push(info.key)
    expect(keys).toContain('some/prefix/k/1')
    await connection.close()
    await root.close()
  })
})

describe('s3 upload checksums and Object Lock', () => {
  const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest()

  it('sends the SHA-256 S3 checks (of the whole object in one request, of each part in multipart) and Object Lock retention on trail objects only', async () => {
    const proxy = await startProxy(s3.endpoint)
    const connection = new S3Connection(options({ endpoint: proxy.url, objectLock: { mode: 'COMPLIANCE', days: 30 } }), { name: 's3' })
    try {
      const small = Buffer.from('{"a":1}\n'.repeat(100))
      await connection.put('c/small.jsonl', Readable.from([small]), { size: small.length, checksum: { sha256: sha256(small).toString('hex') }, retain: true })
      const big = randomBytes(6 * 1024 * 1024) // above partSizeBytes (5 MiB): multipart
      await connection.put('c/big.bin', Readable.from([big]), { size: big.length, checksum: { sha256: sha256(big).toString('hex') }, retain: true })
      const digest = Buffer.from('{"record":1}\n')
      await connection.put('c/digest.json', digest, { checksum: {}, retain: true })
      await connection.check() // a probe: neither checksum nor retention asked

      const put = (fragment: string) => proxy.requests.filter((r) => r.method === 'PUT' && r.url.includes(fragment))
      const single = put('c/small.jsonl')[0]
      expect(single?.headers['x-amz-checksum-sha256']).toBe(sha256(small).toString('base64'))
      expect(single?.headers['x-amz-object-lock-mode']).toBe('COMPLIANCE')
      const until = Date.parse(single?.headers['x-amz-object-lock-retain-until-date'] as string)
      expect(Math.abs(until - (Date.now() + 30 * 86_400_000))).toBeLessThan(120_000)
      expect(put('c/digest.json')[0]?.headers['x-amz-checksum-sha256']).toBe(sha256(digest).toString('base64'))

      const create = proxy.requests.find((r) => r.method === 'POST' && r.url.includes('c/big.bin') && r.url.includes('uploads'))
      expect(create?.headers).toMatchObject({ 'x-amz-checksum-algorithm': 'SHA256', 'x-amz-object-lock-mode': 'COMPLIANCE' })
      const parts = put('c/big.bin').filter((r) => r.url.includes('partNumber'))
      expect(parts.length).toBe(2)
      for (const part of parts) expect(part.headers['x-amz-checksum-sha256']).toBe(sha256(part.body).toString('base64'))

      const probes = proxy.requests.filter((r) => r.method === 'PUT' && r.url.includes('.dss-event-server-probe-'))
      expect(probes).toHaveLength(1)
      expect(probes[0]?.headers['x-amz-object-lock-mode']).toBeUndefined()
      expect(probes[0]?.headers['x-amz-checksum-sha256']).toBeUndefined()
      const back = Buffer.concat(await (await connection.read('c/big.bin')).toArray() as Buffer[])
      expect(back.equals(big)).toBe(true)
    } finally {
      await connection.close()
      await proxy.close()
    }
  })

  it('refuses objectLock without upload checksums in settings', async () => {
    const { problems } = await checkSettings({
      connections: { b: { type: 's3', bucket: 'evs', uploadChecksum: 'none', objectLock: { mode: 'GOVERNANCE', days: 1 } } },
      destinations: [{ name: 'd', connection: 'b' }]
    }, await tempDir())
    expect(problems).toEqual([{ path: '/connections/b/uploadChecksum', message: 'expected "SHA256" with objectLock: S3 requires a checksum on uploads with a retention period' }])
  })
})

describeObjectStoreDestination('s3 (s3rver)', {
  connection: (prefix) => ({ type: 's3', ...options({ prefix }) }),
  reader: (prefix) => new S3Connection(options({ prefix }), { name: 'reader' }),
  refusing: (prefix) => ({ type: 's3', ...options({ prefix, bucket: 'no-such-bucket' }) }),
  stop: async () => await s3.stop(),
  restart: async () => await s3.restart(),
  port: () => s3.port,
  via: (prefix, endpoint, timeouts) => ({ type: 's3', ...options({ prefix, endpoint, ...timeouts }) })
})

describeIntegrity('s3 (s3rver)', {
  connection: (prefix) => ({ type: 's3', ...options({ prefix }) }),
  reader: (prefix) => new S3Connection(options({ prefix }), { name: 'reader' })
})

describeQuery('s3 (s3rver)', {
  connection: (prefix) => ({ type: 's3', ...options({ prefix }) }),
  // The reader then lists whole subtrees instead of one folder level (S3RVER_SHALLOW_FOLDERS).
  wrapConnection: (c: Connection): Connection => ({
    type: c.type,
    name: c.name,
    capabilities: { append: false },
    put: c.put.bind(c),
    read: c.read.bind(c),
    list: c.list.bind(c),
    delete: c.delete.bind(c),
    check: c.check.bind(c),
    close: c.close.bind(c)
  })
})
