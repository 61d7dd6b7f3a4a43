import { describe, expect, it } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { FilesystemConnection } from '../plugins/filesystem/index.js'
import { Uploader } from '../plugins/files/uploader.js'
import { listFiles, tempDir } from './helpers.js'

async function uploader () {
  const dir = await tempDir()
  const removed: number[] = []
  const target = new FilesystemConnection({ root: 'store' }, { name: 'store', baseDir: dir })
  const up = new Uploader({
    connection: target,
    spoolDir: join(dir, 'spool'),
    quarantineDir: join(dir, 'quarantine'),
    concurrency: 2,
    retryInitialMs: 10,
    retryMaxMs: 50,
    logger: pino({ level: 'silent' }),
    now: Date.now,
    onRemoved: (bytes) => { removed.push(bytes) }
  })
  return { dir, up, removed }
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
})
