import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { S3Connection, type S3Options } from '../plugins/s3/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { describeObjectStoreDestination } from './conformance/describe-object-store-destination.js'
import { describeQuery } from './conformance/describe-query.js'
import type { Connection } from '../core/connection.js'
import { startS3, S3_COMPAT, S3_CREDENTIALS, S3RVER_SHALLOW_FOLDERS, type S3Emulator } from './emulators/s3.js'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN } from './child-server.js'
import { tempDir } from './helpers.js'

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

describeObjectStoreDestination('s3 (s3rver)', {
  connection: (prefix) => ({ type: 's3', ...options({ prefix }) }),
  reader: (prefix) => new S3Connection(options({ prefix }), { name: 'reader' }),
  refusing: (prefix) => ({ type: 's3', ...options({ prefix, bucket: 'no-such-bucket' }) }),
  stop: async () => await s3.stop(),
  restart: async () => await s3.restart(),
  port: () => s3.port,
  via: (prefix, endpoint, timeouts) => ({ type: 's3', ...options({ prefix, endpoint, ...timeouts }) })
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
