import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { BlobServiceClient } from '@azure/storage-blob'
import { AzureBlobConnection, type AzureBlobOptions } from '../plugins/azure-blob/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { describeObjectStoreDestination } from './conformance/describe-object-store-destination.js'
import { describeQuery } from './conformance/describe-query.js'
import { startAzurite, AZURITE_ACCOUNT, AZURITE_KEY, type AzureEmulator } from './emulators/azure.js'

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

describeQuery('azure-blob (Azurite)', {
  connection: (prefix) => ({ type: 'azure-blob', ...options({ prefix }) })
})
