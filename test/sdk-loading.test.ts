import { describe, expect, it } from 'vitest'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { spawnServer } from './child-server.js'
import { tempDir } from './helpers.js'

const TRACE = join(import.meta.dirname, 'fixtures', 'trace-imports.mjs')
const SDKS = ['@aws-sdk/client-s3', '@aws-sdk/lib-storage', '@azure/storage-blob', '@azure/identity', '@google-cloud/storage']

/** Starts the real server with these connections, stops it, and tells which cloud SDKs it loaded. */
async function sdksLoaded (connections: Record<string, unknown>): Promise<string[]> {
  const dir = await tempDir()
  const settings = join(dir, 'settings.json')
  await writeFile(settings, JSON.stringify({
    connections,
    destinations: Object.keys(connections).map((name) => ({ name: `to-${name}`, connection: name }))
  }))
  const trace = join(dir, 'imports.txt')
  await writeFile(trace, '')
  const server = await spawnServer(['--config', settings], dir, { EVS_TRACE_IMPORTS: trace }, ['--import', TRACE])
  server.process.kill('SIGTERM')
  expect(await server.exited).toBe(0)
  const urls = await readFile(trace, 'utf8')
  expect(urls).toContain('/plugins/files/index.js') // the trace works
  return SDKS.filter((sdk) => urls.includes(`/node_modules/${sdk}/`))
}

describe('cloud SDKs load only for the connections settings use', () => {
  it('filesystem only: no cloud SDK', async () => {
    expect(await sdksLoaded({ local: { type: 'filesystem', root: './out' } })).toEqual([])
  })

  it('S3: only the AWS SDK', async () => {
    expect(await sdksLoaded({ bucket: { type: 's3', bucket: 'evs', endpoint: 'http://127.0.0.1:9', forcePathStyle: true } }))
      .toEqual(['@aws-sdk/client-s3', '@aws-sdk/lib-storage'])
  })

  it('Azure with a connection string: the blob SDK, not @azure/identity', async () => {
    expect(await sdksLoaded({ blobs: { type: 'azure-blob', container: 'evs', connectionString: 'UseDevelopmentStorage=true' } }))
      .toEqual(['@azure/storage-blob'])
  })

  it('GCS: only the Google Cloud Storage SDK', async () => {
    expect(await sdksLoaded({ gcs: { type: 'gcs', bucket: 'evs', apiEndpoint: 'http://127.0.0.1:9' } })).toEqual(['@google-cloud/storage'])
  })
})
