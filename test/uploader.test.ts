import { describe, expect, it } from 'vitest'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import type { Connection } from '../core/connection.js'
import { FilesystemConnection } from '../plugins/filesystem/index.js'
import { Uploader, type SpoolFile } from '../plugins/files/uploader.js'
import { listFiles, tempDir } from './helpers.js'

async function uploader (options: { concurrency?: number, connection?: (store: Connection) => Connection } = {}) {
  const dir = await tempDir()
  const removed: number[] = []
  const store = new FilesystemConnection({ root: 'store' }, { name: 'store', baseDir: dir })
  const up = new Uploader({
    connection: options.connection?.(store) ?? store,
    spoolDir: join(dir, 'spool'),
    quarantineDir: join(dir, 'quarantine'),
    concurrency: options.concurrency ?? 2,
    retryInitialMs: 10,
    retryMaxMs: 50,
    logger: pino({ level: 'silent' }),
    now: Date.now,
    onRemoved: (bytes) => { removed.push(bytes) }
  })
  return { dir, up, removed }
}

/** Writes `count` spool files, each in a folder of its own, the first the oldest. */
async function spool (dir: string, count: number): Promise<SpoolFile[]> {
  const files: SpoolFile[] = []
  for (let i = 0; i < count; i++) {
    const key = `t/r${i}/2026/01/01/00/f${i}.jsonl`
    const path = join(dir, 'spool', ...key.split('/'))
    await mkdir(join(path, '..'), { recursive: true })
    await writeFile(path, `{"i":${i}}\n`)
    files.push({ key, path, size: 8, since: 1000 + i })
  }
  return files
}

/** A store that takes connections and never answers: a put ends only when it is aborted. */
function hung (store: Connection): Connection {
  return Object.assign(Object.create(store) as Connection, {
    put: async (_key: string, body: NodeJS.ReadableStream, options: { signal?: AbortSignal } = {}) => {
      body.resume()
      await new Promise((_resolve, reject) => options.signal?.addEventListener('abort', () => reject(options.signal?.reason)))
    }
  })
}

describe('uploader', () => {
  it('uploads under the same key and removes the spool file only after the store confirmed it', async () => {
    const { dir, up, removed } = await uploader()
    const { mkdir } = await import('node:fs/promises')
    await mkdir(join(dir, 'spool', 'a'), { recursive: true })
    await writeFile(join(dir, 'spool', 'a', 'f.jsonl'), '{"x":1}\n')
    up.enqueue({ key: 'a/f.jsonl', path: join(dir, 'spool', 'a', 'f.jsonl'), size: 8, since: 0 })
    await up.drain()
    expect(await listFiles(join(dir, 'store'))).toEqual(['a/f.jsonl'])
    expect(await listFiles(join(dir, 'spool'))).toEqual([])
    expect(removed).toEqual([8])
    expect(up.stats).toMatchObject({ uploaded: 1, pending: 0, retries: 0 })
  })

  it('drops a job whose spool file another uploader already shipped, instead of retrying it forever', async () => {
    const { dir, up, removed } = await uploader()
    up.enqueue({ key: 'gone.jsonl', path: join(dir, 'spool', 'gone.jsonl'), size: 5, since: 0 })
    await up.drain()
    expect(up.stats).toMatchObject({ uploaded: 0, pending: 0, retries: 0, quarantined: 0 })
    expect(removed).toEqual([5])
    await up.close(0)
  })

  it('a file counts as uploaded only once the folders it emptied are gone: drain finds an empty spool', async () => {
    const { dir, up } = await uploader({ concurrency: 4 })
    for (const file of await spool(dir, 8)) up.enqueue(file)
    await up.drain()
    expect(await readdir(join(dir, 'spool'))).toEqual([])
    expect(up.stats).toMatchObject({ uploaded: 8, pending: 0 })
  })

  it('close uploads every queued file within the grace period, not only those under way', async () => {
    const { dir, up } = await uploader({ concurrency: 1 })
    for (const file of await spool(dir, 6)) up.enqueue(file)
    expect(await up.close(30_000)).toEqual({ files: 0, bytes: 0, oldestSince: null, oldestKey: null })
    expect(await listFiles(join(dir, 'store'))).toHaveLength(6)
    expect(await readdir(join(dir, 'spool'))).toEqual([])
  })

  it('close aborts uploads a hung store holds once the grace period ends, and reports what stays in the spool', async () => {
    const { dir, up } = await uploader({ concurrency: 2, connection: hung })
    const files = await spool(dir, 3)
    for (const file of files) up.enqueue(file)
    const flushed = up.drain()
    expect(await up.close(50)).toEqual({ files: 3, bytes: 24, oldestSince: 1000, oldestKey: files[0]?.key })
    await flushed // a flush waiting for the spool to empty is released too
    expect(await listFiles(join(dir, 'spool'))).toHaveLength(3)
    expect(up.stats).toMatchObject({ uploaded: 0, pending: 3, retries: 0 })
  })
})
