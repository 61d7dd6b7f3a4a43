import { describe, expect, it, vi } from 'vitest'
import { mkdir, open, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { CommitLog } from '../plugins/files/commit-log.js'
import { Journal } from '../plugins/files/journal.js'
import { Appender } from '../plugins/files/appender.js'
import { DescriptorCache } from '../plugins/files/descriptor-cache.js'
import { PartitionWriter } from '../plugins/files/partition-writer.js'
import { onCleanup, tempDir } from './helpers.js'

const silent = pino({ level: 'silent' })

async function writer (dir: string, extra: Partial<ConstructorParameters<typeof PartitionWriter>[0]> = {}) {
  await mkdir(join(dir, 'state'), { recursive: true })
  const journal = await Journal.load(join(dir, 'state'))
  onCleanup(async () => await journal.close())
  return new PartitionWriter({
    localPath: (key) => join(dir, 'out', ...key.split('/')),
    fileName: (seq) => `f_${seq}.jsonl`,
    compression: 'none',
    durability: 'fsync',
    flushEveryBytes: 1 << 30,
    flushEveryS: 0,
    maxOpenFiles: 4,
    maxActiveFiles: 100,
    pipelinedCommits: 1,
    journal,
    logger: pino({ level: 'silent' }),
    now: Date.now,
    ...extra
  })
}

describe('partition writer: names of new files', () => {
  it('durability fsync without a commit log: a new file\'s folders are synced before its first lines are answered', async () => {
    const dir = await tempDir()
    const w = await writer(dir)
    await Promise.all(Array.from({ length: 3 }, async (_, k) => await w.append(`t/k${k}`, '', [Buffer.from(`{"k":${k}}\n`)])))
    // k0, k1, k2, t/ and out/: t/ is shared, synced once per commit that needs it.
    expect(w.stats.folderSyncs).toBeGreaterThanOrEqual(5)
    await w.flush()
  })

  it('durability write: folders are synced when the file is sealed, not when it is created', async () => {
    const dir = await tempDir()
    const w = await writer(dir, { durability: 'write' })
    await w.append('t/k0', '', [Buffer.from('{"k":0}\n')])
    expect(w.stats.folderSyncs).toBe(0)
    await w.flush()
    // k0/, t/, out/ and the folder where mkdir made out/.
    expect(w.stats).toMatchObject({ filesSealed: 1, folderSyncs: 4 })
  })
})

describe('partition writer: folders made by one file, sealed with another', () => {
  it('a file sealed first syncs the folders above it that another file made (durability write)', async () => {
    const dir = await tempDir()
    const w = await writer(dir, { durability: 'write', flushEveryBytes: 100 })
    // k1's file makes out/, out/t/ and out/t/k1/; k2's file, only out/t/k2/. Then k2's is sealed
    // (over flushEveryBytes) while k1's stays open: t/'s entry in out/ must be durable by then.
    await w.append('t/k1', '', [Buffer.from('{"k":1}\n')])
    await w.append('t/k2', '', [Buffer.from(`{"k":2,"pad":"${'x'.repeat(200)}"}\n`)])
    await vi.waitFor(() => { expect(w.stats.filesSealed).toBe(1) })
    // k2/, t/, out/ and the folder where mkdir made out/.
    expect(w.stats.folderSyncs).toBe(4)
    await w.flush()
    expect(w.stats).toMatchObject({ filesSealed: 2, folderSyncs: 5 })
  })
})

describe('partition writer with a commit log', () => {
  it('a file whose deferred write fails keeps its acknowledged lines: left open in the journal, the log kept, replayed at the next start', async () => {
    const dir = await tempDir()
    const log = new CommitLog(join(dir, 'log'), silent, Date.now)
    await log.start()
    let closed = false
    onCleanup(async () => { if (!closed) await log.close() })
    await mkdir(join(dir, 'state'), { recursive: true })
    const journal = await Journal.load(join(dir, 'state'))
    const w = await writer(dir, { commitLog: log, maxOpenFiles: 1, journal, checkpointBytes: 1 << 30, checkpointMs: 3_600_000 })
    await w.append('a', '', [Buffer.from('{"n":1}\n')])
    await w.append('b', '', [Buffer.from('{"n":2}\n')]) // takes the only descriptor: a's lines now wait in memory
    // a's folder becomes unwritable (a file in its place)...
    const { rename, writeFile } = await import('node:fs/promises')
    await rename(join(dir, 'out', 'a'), join(dir, 'a-moved'))
    await writeFile(join(dir, 'out', 'a'), 'not a folder')
    // ...and 64 KiB for it are acknowledged from the log, then written at once: that write fails.
    const big = Buffer.from(`{"n":3,"pad":"${'x'.repeat(70_000)}"}\n`)
    await w.append('a', '', [big])
    await w.flush()
    expect(journal.unsealed().map((e) => e.key)).toEqual(['a/f_1.jsonl'])
    await journal.close()
    await log.close()
    closed = true
    // The next start: the folder is back, the log is replayed into the file left open.
    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'out', 'a'))
    await rename(join(dir, 'a-moved'), join(dir, 'out', 'a'))
    const { recoverOpenFiles } = await import('../plugins/files/recovery.js')
    const again = await Journal.load(join(dir, 'state'))
    onCleanup(async () => await again.close())
    await recoverOpenFiles({ destination: 'd', journal: again, log: new CommitLog(join(dir, 'log'), silent, Date.now), localPath: (key) => join(dir, 'out', ...key.split('/')), tornDir: join(dir, 'torn'), logger: silent, now: Date.now })
    expect(await readFile(join(dir, 'out', 'a', 'f_1.jsonl'), 'utf8')).toBe(`{"n":1}\n${big.toString()}`)
    expect(again.unsealed()).toEqual([])
  })

  it('answers before the new files\' folders are synced; the checkpoint syncs each folder once, before the log lets go', async () => {
    const dir = await tempDir()
    let now = 0
    const log = new CommitLog(join(dir, 'log'), silent, () => now)
    await log.start()
    onCleanup(async () => await log.close())
    const w = await writer(dir, { commitLog: log, checkpointBytes: 1 << 30, checkpointMs: 1000, now: () => now })
    // Ten new files, each in a new folder of a new topic folder: out/t/k<N>/.
    await Promise.all(Array.from({ length: 10 }, async (_, k) => await w.append(`t/k${k}`, '', [Buffer.from(`{"k":${k}}\n`)])))
    expect(w.stats).toMatchObject({ filesOpened: 10, linesWritten: 10, folderSyncs: 0 })
    // The next commit after checkpointMs checkpoints: the ten file folders, t/, out/ and the folder
    // where mkdir made out/, once each.
    now = 2000
    await w.append('t/k0', '', [Buffer.from('{"k":0}\n')])
    await vi.waitFor(() => { expect(w.stats.folderSyncs).toBe(13) })
    await w.flush()
    expect(w.stats.folderSyncs).toBe(13)
    expect((await readdir(join(dir, 'out', 't'))).length).toBe(10)
  })

  it('checkpoints: syncs the files a segment covers and deletes the segment, keeping every line', async () => {
    const dir = await tempDir()
    const log = new CommitLog(join(dir, 'log'), silent, Date.now)
    await log.start()
    onCleanup(async () => await log.close())
    const w = await writer(dir, { commitLog: log, checkpointBytes: 1 })
    for (let round = 0; round < 5; round++) {
      await Promise.all(Array.from({ length: 10 }, async (_, k) => await w.append(`p${k}`, '', [Buffer.from(`{"round":${round},"k":${k}}\n`)])))
    }
    await w.flush()
    // Only the segment being written remains; the others were checkpointed away.
    expect((await readdir(join(dir, 'log'))).length).toBeLessThanOrEqual(2)
    for (let k = 0; k < 10; k++) {
      const text = await readFile(join(dir, 'out', `p${k}`, `f_${k + 1}.jsonl`), 'utf8')
      expect(text.trim().split('\n').map((l) => JSON.parse(l).round)).toEqual([0, 1, 2, 3, 4])
    }
    expect(w.stats.openFiles).toBeLessThanOrEqual(4)
  })

  it('bounds the bytes held for files without a descriptor, writing out the largest first', async () => {
    const dir = await tempDir()
    const log = new CommitLog(join(dir, 'log'), silent, Date.now)
    await log.start()
    onCleanup(async () => await log.close())
    const limit = 4000
    const w = await writer(dir, { commitLog: log, maxOpenFiles: 2, checkpointBytes: 1 << 30, checkpointMs: 3_600_000, deferredMemoryBytes: limit })
    const line = (round: number, k: number): Buffer => Buffer.from(`{"round":${round},"k":${k},"pad":"${'x'.repeat(60)}"}\n`)
    let most = 0
    for (let round = 0; round < 30; round++) {
      await Promise.all(Array.from({ length: 20 }, async (_, k) => await w.append(`p${k}`, '', [line(round, k)])))
      most = Math.max(most, w.deferredBytes)
    }
    // At most the limit plus the one commit not yet written out when its requests were answered.
    expect(most).toBeLessThanOrEqual(limit + 20 * line(99, 99).length)
    await w.flush()
    for (let k = 0; k < 20; k++) {
      const text = await readFile(join(dir, 'out', `p${k}`, `f_${k + 1}.jsonl`), 'utf8')
      expect(text.trim().split('\n').map((l) => JSON.parse(l).round)).toEqual(Array.from({ length: 30 }, (_, r) => r))
    }
  })
})

describe('DescriptorCache', () => {
  it('keeps at most max descriptors, closing the least recently used unpinned one; one opening per key at a time', async () => {
    const dir = await tempDir()
    const opened: string[] = []
    const cache = new DescriptorCache<string>(2, async (key) => {
      opened.push(key)
      return await open(join(dir, key), 'a')
    })
    const a = await cache.get('a')
    const [b1, b2] = await Promise.all([cache.get('b'), cache.get('b')])
    expect(b1).toBe(b2)
    cache.pin('a')
    await cache.get('c') // 'b' goes: 'a' is pinned although least recently used
    expect(cache.has('a')).toBe(true)
    expect(cache.has('b')).toBe(false)
    expect(cache.size).toBe(2)
    expect(await cache.get('a')).toBe(a)
    // Every descriptor pinned: the next opening waits until one is released.
    cache.pin('c')
    let gotD = false
    const d = cache.get('d').then((handle) => { gotD = true; return handle })
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(gotD).toBe(false)
    cache.unpin('a')
    cache.unpin('c')
    await d
    expect(cache.size).toBe(2)
    expect(opened).toEqual(['a', 'b', 'c', 'd'])
    for (const key of ['a', 'c', 'd']) if (cache.has(key)) await (await cache.remove(key)).close()
    expect(cache.size).toBe(0)
  })
})

describe('Appender', () => {
  it('writes synchronously while writes are fast, through the thread pool for a minute after a slow one', async () => {
    const dir = await tempDir()
    const handle = await open(join(dir, 'f'), 'a')
    const viaPool = vi.spyOn(handle, 'writev')
    let clock = 0
    let slowNext = false
    const slow: number[] = []
    const appender = new Appender({ warn: (details) => slow.push((details as { ms: number }).ms) }, 'test', () => {
      const now = clock
      if (slowNext) { clock += 25; slowNext = false }
      return now
    })
    await appender.write(handle, [Buffer.from('a\n')])
    expect(viaPool).not.toHaveBeenCalled()
    slowNext = true
    await appender.write(handle, [Buffer.from('b\n'), Buffer.from('c\n')])
    expect(slow).toEqual([25])
    await appender.write(handle, [Buffer.from('d\n')])
    expect(viaPool).toHaveBeenCalledTimes(1)
    clock += 60_000
    await appender.write(handle, [Buffer.from('e\n')])
    expect(viaPool).toHaveBeenCalledTimes(1)
    await handle.close()
    expect(await readFile(join(dir, 'f'), 'utf8')).toBe('a\nb\nc\nd\ne\n')
  })
})
