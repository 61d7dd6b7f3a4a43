import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { classifyGcsError, GcsConnection, type GcsOptions } from '../plugins/gcs/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { describeObjectStoreDestination } from './conformance/describe-object-store-destination.js'
import { describeIntegrity } from './conformance/describe-integrity.js'
import { describeQuery } from './conformance/describe-query.js'
import { startGcs, type GcsEmulator } from './emulators/gcs.js'
import { startProxy } from './emulators/proxy.js'
import { checkSettings } from '../index.js'
import { onCleanup, tempDir } from './helpers.js'
import { startStallProxy } from './stall-proxy.js'

let gcs: GcsEmulator

beforeAll(async () => {
  gcs = await startGcs()
})

afterAll(async () => {
  await gcs.dispose()
})

function options (extra: Partial<GcsOptions> = {}): GcsOptions {
  return { bucket: 'evs', prefix: `conf-${randomBytes(4).toString('hex')}/`, apiEndpoint: gcs.endpoint, projectId: 'demo-evs', uploadMode: 'resumable', idleTimeoutS: 60, ...extra }
}

describeConnection('gcs (Cloud Storage emulator)', {
  create: async () => new GcsConnection(options(), { name: 'gcs', baseDir: process.cwd() }),
  observed: ({ url }) => new GcsConnection(options({ apiEndpoint: url }), { name: 'gcs', baseDir: process.cwd() })
})

describeConnection('gcs (Cloud Storage emulator, simple uploads)', {
  create: async () => new GcsConnection(options({ uploadMode: 'simple' }), { name: 'gcs', baseDir: process.cwd() }),
  observed: ({ url }) => new GcsConnection(options({ uploadMode: 'simple', apiEndpoint: url }), { name: 'gcs', baseDir: process.cwd() })
})

describe('gcs connection', () => {
  it('treats refusals (400, 401, 403, 404) as permanent and everything else as worth retrying', () => {
    const withCode = (code: number | string) => Object.assign(new Error(`status ${code}`), { code })
    for (const code of [400, 401, 403, 404]) expect(classifyGcsError(withCode(code))).toMatchObject({ permanent: true })
    for (const code of [408, 429, 500, 503, 'ECONNREFUSED']) expect(classifyGcsError(withCode(code))).not.toHaveProperty('permanent')
  })

  it('gives the JSON API calls a timeout too: a delete against a store that never answers fails', async () => {
    const proxy = await startStallProxy(Number(new URL(gcs.endpoint).port), 'stall')
    onCleanup(async () => await proxy.close())
    const connection = new GcsConnection(options({ apiEndpoint: proxy.endpoint, idleTimeoutS: 1 }), { name: 'gcs', baseDir: process.cwd() })
    await expect(connection.delete('a/b')).rejects.toThrow(/timeout/)
    expect(proxy.accepted).toBeGreaterThan(0)
    await connection.close()
  })

  it('rejects inline credentials that are not JSON without echoing them', async () => {
    const { problems } = await checkSettings({
      connections: { g: { type: 'gcs', bucket: 'evs', credentials: 'secret-not-json' } },
      destinations: [{ name: 'd', connection: 'g' }]
    }, await tempDir())
    expect(problems).toEqual([{ path: '/connections/g/credentials', message: 'expected the JSON of a service account key' }])
  })
})

describe('gcs upload checksums', () => {
  for (const uploadMode of ['simple', 'resumable'] as const) {
    it(`${uploadMode} uploads: the MD5 given goes to the store with the object, and a corrupted upload is refused (CRC32C)`, async () => {
      const proxy = await startProxy(gcs.endpoint)
      const connection = new GcsConnection(options({ apiEndpoint: proxy.url, uploadMode }), { name: 'gcs', baseDir: process.cwd() })
      try {
        expect(connection.capabilities.checksums).toEqual(['md5'])
        const body = Buffer.from('{"record":1}\n'.repeat(50))
        const md5 = createHash('md5').update(body).digest('base64')
        await connection.put('c/ok', Readable.from([body]), { size: body.length, checksum: { md5 } })
        expect(proxy.requests.some((r) => r.body.toString('latin1').includes(`"md5Hash":"${md5}"`))).toBe(true)
        expect(Buffer.concat(await (await connection.read('c/ok')).toArray() as Buffer[]).equals(body)).toBe(true)
        proxy.corrupt = true
        await expect(connection.put('c/bad', Readable.from([body]), { size: body.length, checksum: { md5 } })).rejects.toThrow(/did not match the data from the server/)
        proxy.corrupt = false
        await expect(connection.read('c/bad')).rejects.toMatchObject({ code: 'EVS_ERR_CONNECTION_NOT_FOUND' })
      } finally {
        await connection.close()
        await proxy.close()
      }
    })
  }
})

describeObjectStoreDestination('gcs (Cloud Storage emulator)', {
  connection: (prefix) => ({ type: 'gcs', ...options({ prefix }) }),
  reader: (prefix) => new GcsConnection(options({ prefix }), { name: 'reader', baseDir: process.cwd() }),
  refusing: { unsupported: 'the Cloud Storage emulator accepts uploads to any bucket and ignores credentials; see the classification test above' },
  stop: async () => await gcs.stop(),
  restart: async () => await gcs.restart(),
  port: () => Number(new URL(gcs.endpoint).port),
  // No connectTimeoutS here: the SDK has none, and a connection that cannot be opened is an upload that does not move.
  via: (prefix, endpoint, { idleTimeoutS }) => ({ type: 'gcs', ...options({ prefix, apiEndpoint: endpoint, idleTimeoutS }) })
})

describeIntegrity('gcs (Cloud Storage emulator)', {
  connection: (prefix) => ({ type: 'gcs', ...options({ prefix }) }),
  reader: (prefix) => new GcsConnection(options({ prefix }), { name: 'reader', baseDir: process.cwd() })
})

describeQuery('gcs (Cloud Storage emulator)', {
  connection: (prefix) => ({ type: 'gcs', ...options({ prefix }) })
})
