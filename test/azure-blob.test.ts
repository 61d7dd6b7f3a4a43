import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { BlobServiceClient } from '@azure/storage-blob'
import { AzureBlobConnection, type AzureBlobOptions } from '../plugins/azure-blob/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { describeObjectStoreDestination } from './conformance/describe-object-store-destination.js'
import { describeIntegrity } from './conformance/describe-integrity.js'
import { describeQuery } from './conformance/describe-query.js'
import { startAzurite, AZURITE_ACCOUNT, AZURITE_KEY, type AzureEmulator } from './emulators/azure.js'
import { startProxy } from './emulators/proxy.js'

let azure: AzureEmulator

beforeAll(async () => {
  azure = await startAzurite()
  await BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient('evs').createIfNotExists()
})

afterAll(async () => {
  await azure.dispose()
})

function options (extra: Partial<AzureBlobOptions> = {}): AzureBlobOptions {
  return {
    container: 'evs',
    prefix: `conf-${randomBytes(4).toString('hex')}/`,
    connectionString: azure.connectionString,
    blockSizeBytes: 1024 * 1024,
    uploadConcurrency: 2,
    connectTimeoutS: 10,
    idleTimeoutS: 60,
    ...extra
  }
}

describeConnection('azure-blob (Azurite)', {
  create: async () => new AzureBlobConnection(options(), { name: 'azure' }),
  observed: ({ url }) => {
    const { connectionString: _, ...rest } = options()
    return new AzureBlobConnection({ ...rest, accountName: AZURITE_ACCOUNT, accountKey: AZURITE_KEY, endpoint: `${url}/${AZURITE_ACCOUNT}` }, { name: 'azure' })
  }
})

describe('azure-blob connection', () => {
  it('authenticates with account name and key as well as with a connection string', async () => {
    const { connectionString: _, ...rest } = options()
    const connection = new AzureBlobConnection({ ...rest, accountName: AZURITE_ACCOUNT, accountKey: AZURITE_KEY, endpoint: azure.endpoint }, { name: 'azure' })
    await connection.check()
    await connection.close()
  })

  it('marks a missing container as permanent', async () => {
    const connection = new AzureBlobConnection(options({ container: 'no-such-container' }), { name: 'azure' })
    await expect(connection.put('a/b', Buffer.from('x'))).rejects.toMatchObject({ permanent: true })
    await connection.close()
  })

  it('marks a wrong key as permanent', async () => {
    const { connectionString: _, ...rest } = options()
    const connection = new AzureBlobConnection({ ...rest, accountName: AZURITE_ACCOUNT, accountKey: Buffer.from('wrong key').toString('base64'), endpoint: azure.endpoint }, { name: 'azure' })
    await expect(connection.put('a/b', Buffer.from('x'))).rejects.toMatchObject({ permanent: true })
  })
})

describe('azure-blob upload checksums and immutability', () => {
  const md5 = (data: Buffer): Buffer => createHash('md5').update(data).digest()
  const container = (): ReturnType<BlobServiceClient['getContainerClient']> => BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient('evs')

  it('a corrupted upload is refused: each block carries its MD5, the blob its Content-MD5; an earlier blob stays whole', async () => {
    const proxy = await startProxy(azure.endpoint)
    const { connectionString: _, ...rest } = options()
    const connection = new AzureBlobConnection({ ...rest, accountName: AZURITE_ACCOUNT, accountKey: AZURITE_KEY, endpoint: `${proxy.url}/${AZURITE_ACCOUNT}` }, { name: 'azure' })
    const name = (key: string): string => `${rest.prefix}${key}`
    try {
      const small = Buffer.from('{"record":1}\n'.repeat(10))
      const big = randomBytes(2.5 * 1024 * 1024) // three 1 MiB blocks
      await connection.put('c/small', small, { checksum: {} })
      await connection.put('c/big', Readable.from([big]), { checksum: { md5: md5(big).toString('base64') } })
      for (const [key, body] of [['c/small', small], ['c/big', big]] as const) {
        const properties = await container().getBlobClient(name(key)).getProperties()
        expect(Buffer.from(properties.contentMD5 as Uint8Array).equals(md5(body))).toBe(true)
      }
      const blocks = proxy.requests.filter((r) => r.url.includes('comp=block&'))
      expect(blocks.length).toBe(4)
      for (const block of blocks) expect(block.headers['content-md5']).toBe(md5(block.body).toString('base64'))

      proxy.corrupt = true
      await expect(connection.put('c/small', Buffer.from('changed, and corrupted on the way\n'.repeat(4)), { checksum: {} })).rejects.toThrow(/md5|MD5/)
      await expect(connection.put('c/new', Readable.from([big]), { checksum: {} })).rejects.toThrow(/md5|MD5/)
      proxy.corrupt = false
      expect(Buffer.concat(await (await connection.read('c/small')).toArray() as Buffer[]).equals(small)).toBe(true)
      await expect(connection.read('c/new')).rejects.toMatchObject({ code: 'EVS_ERR_CONNECTION_NOT_FOUND' })
      // A body that changed since its MD5 was computed is not committed either.
      await expect(connection.put('c/new', Readable.from([big]), { checksum: { md5: md5(small).toString('base64') } })).rejects.toThrow(/do not match the MD5/)
      await expect(connection.read('c/new')).rejects.toMatchObject({ code: 'EVS_ERR_CONNECTION_NOT_FOUND' })
    } finally {
      await connection.close()
      await proxy.close()
    }
  })

  it('asks for a version-level immutability policy on trail objects (Azurite accepts the request but neither keeps nor enforces the policy)', async () => {
    const proxy = await startProxy(azure.endpoint)
    const { connectionString: _, ...rest } = options()
    const connection = new AzureBlobConnection({ ...rest, accountName: AZURITE_ACCOUNT, accountKey: AZURITE_KEY, endpoint: `${proxy.url}/${AZURITE_ACCOUNT}`, immutability: { days: 7, mode: 'Unlocked' } }, { name: 'azure' })
    try {
      const outcome = await connection.put('c/locked', Buffer.from('x'), { checksum: {}, retain: true }).then(() => 'stored', (err: Error) => err.message)
      const commit = proxy.requests.find((r) => r.url.includes('comp=blocklist'))
      expect(commit?.headers['x-ms-immutability-policy-mode']).toBe('Unlocked')
      expect(Math.abs(Date.parse(commit?.headers['x-ms-immutability-policy-until-date'] as string) - (Date.now() + 7 * 86_400_000))).toBeLessThan(120_000)
      await connection.check() // probes are not locked
      expect(proxy.requests.filter((r) => r.url.includes('.dss-event-server-probe-') && r.headers['x-ms-immutability-policy-mode'] !== undefined)).toEqual([])
      // Real Azure applies it when the container allows version-level immutability; Azurite ignores it.
      expect(outcome).toBe('stored')
    } finally {
      await connection.close()
      await proxy.close()
    }
  })
})

describeObjectStoreDestination('azure-blob (Azurite)', {
  connection: (prefix) => ({ type: 'azure-blob', ...options({ prefix }) }),
  reader: (prefix) => new AzureBlobConnection(options({ prefix }), { name: 'reader' }),
  refusing: (prefix) => ({ type: 'azure-blob', ...options({ prefix, container: 'no-such-container' }) }),
  stop: async () => await azure.stop(),
  restart: async () => await azure.restart(),
  port: () => Number(new URL(azure.endpoint).port),
  via: (prefix, endpoint, timeouts) => ({
    type: 'azure-blob',
    ...options({ prefix, ...timeouts, connectionString: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint}/${AZURITE_ACCOUNT};` })
  })
})

describeIntegrity('azure-blob (Azurite)', {
  connection: (prefix) => ({ type: 'azure-blob', ...options({ prefix }) }),
  reader: (prefix) => new AzureBlobConnection(options({ prefix }), { name: 'reader' })
})

describeQuery('azure-blob (Azurite)', {
  connection: (prefix) => ({ type: 'azure-blob', ...options({ prefix }) })
})
