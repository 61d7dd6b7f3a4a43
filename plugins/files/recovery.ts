import { mkdir, open, readdir, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, relative, sep } from 'node:path'
import { gunzipSync } from 'node:zlib'
import type { FastifyBaseLogger } from 'fastify'
import { EVS_ERR_RECOVERY } from '../../core/plugin-api.js'
import { foldersOfNewFile, fsyncDirs } from '../fs-sync.js'
import type { CommitLog } from './commit-log.js'
import type { Journal } from './journal.js'
import type { Compression } from './partition-writer.js'
import { zstdFrames } from './zstd.js'
import type { SpoolFile } from './uploader.js'

// What a destination does at start-up about the previous run: replay the commit log into the files
// left open, repair those files, and find the sealed files still waiting in the spool.

export interface RecoveryOptions {
  /** The destination's name, for errors. */
  destination: string
  journal: Journal
  /** The commit log, not started: read, then cleared. */
  log: CommitLog
  localPath(key: string): string
  /** Where cut torn tails are kept. */
  tornDir: string
  logger: FastifyBaseLogger
  now(): number
  /** Awaited for each file made whole (intact or repaired), before the journal records it as sealed. */
  onRecovered?(key: string): Promise<void>
}

/** How a file was written, from its name: it may predate the current settings (or be a Parquet spool file). */
export function compressionOfKey (key: string): Compression {
  return key.endsWith('.gz') ? 'gzip' : key.endsWith('.zst') ? 'zstd' : 'none'
}

/**
 * Makes every file the previous run left open whole and durable, then seals it in the journal.
 * The commit log is replayed whatever the settings now say: a log left behind holds acknowledged
 * events. Rejects with EVS_ERR_RECOVERY naming the step that failed (the log, or the file's key).
 */
export async function recoverOpenFiles ({ destination, journal, log, localPath, tornDir, logger, now, onRecovered }: RecoveryOptions): Promise<void> {
  try {
    const replayed = await replayCommitLog(log, new Set(journal.unsealed().map((e) => e.key)), localPath)
    if (replayed.records > 0) logger.info(replayed, 'replayed the commit log into the files left open by the previous run')
    if (replayed.torn) logger.warn('the commit log ended with a torn record (never acknowledged); it was ignored')
  } catch (err) {
    throw new EVS_ERR_RECOVERY(destination, `commit log: ${(err as Error).message}`)
  }
  await log.clear()
  for (const entry of journal.unsealed()) {
    try {
      const result = await repairFile(localPath(entry.key), compressionOfKey(entry.key), tornDir, logger, now)
      logger.info({ key: entry.key, result }, 'recovered a file left open by the previous run')
      if (result === 'intact' || result === 'repaired') await onRecovered?.(entry.key)
    } catch (err) {
      throw new EVS_ERR_RECOVERY(destination, `${entry.key}: ${(err as Error).message}`)
    }
    await journal.sealed(entry.seq)
  }
  await journal.compact()
}

/**
 * Writes every logged record of a still-open file back at its offset, syncs those files and cuts
 * them at the end of their last record. Records of sealed files are skipped: those files were
 * synced (and, for object stores, may be uploaded and gone).
 */
async function replayCommitLog (log: CommitLog, open: ReadonlySet<string>, localPath: (key: string) => string): Promise<{ records: number, files: number, torn: boolean }> {
  const writes = new Map<string, Array<{ offset: number, data: Buffer }>>()
  const { torn } = await log.replay(async (key, offset, data) => {
    if (!open.has(key)) return
    let list = writes.get(key)
    if (list === undefined) writes.set(key, list = [])
    list.push({ offset, data })
  })
  let records = 0
  for (const [key, list] of writes) {
    const path = localPath(key)
    const created = await mkdir(dirname(path), { recursive: true })
    const handle = await openOrCreate(path)
    try {
      let end = 0
      for (const { offset, data } of list) {
        await handle.write(data, 0, data.length, offset)
        end = Math.max(end, offset + data.length)
        records++
      }
      await handle.truncate(end)
      await handle.sync()
    } finally {
      await handle.close()
    }
    // The log is cleared next: the file's name must survive a crash on its own (its folders' syncs
    // may have been deferred to a checkpoint that never came).
    await fsyncDirs(foldersOfNewFile(dirname(path), created), 2)
  }
  return { records, files: writes.size, torn }
}

async function openOrCreate (path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r+')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    return await open(path, 'w')
  }
}

/** Files in the spool, as keys relative to it, oldest first; folders emptied by uploads are not files. */
export async function spoolFiles (spoolDir: string): Promise<SpoolFile[]> {
  let entries
  try {
    entries = await readdir(spoolDir, { recursive: true, withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const files: SpoolFile[] = []
  for (const entry of entries) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    const info = await stat(path)
    files.push({ key: relative(spoolDir, path).split(sep).join('/'), path, size: info.size, since: info.mtimeMs })
  }
  return files.sort((a, b) => a.since - b.since)
}

export type RepairResult = 'missing' | 'intact' | 'repaired' | 'removed-empty'

/** Offset where the complete part of the file ends: after its last newline, or its last whole gzip member or zstd frame. */
function completeLength (data: Buffer, compression: Compression): number {
  if (compression === 'none') return data.lastIndexOf(0x0a) + 1
  if (compression === 'zstd') return zstdFrames(data).complete
  try {
    gunzipSync(data)
    return data.length
  } catch {}
  // Each commit wrote one gzip member; find the last member start whose prefix decodes whole.
  for (let at = data.lastIndexOf(Buffer.from([0x1f, 0x8b, 0x08])); at > 0; at = data.lastIndexOf(Buffer.from([0x1f, 0x8b, 0x08]), at - 1)) {
    try {
      gunzipSync(data.subarray(0, at))
      return at
    } catch {}
  }
  return 0
}

/**
 * Makes a file that was open during a crash whole again. Acknowledged data was synced, so only an
 * unacknowledged tail can be torn: it is cut and kept in `tornDir` (never silently dropped), and
 * logged. An empty file is removed (a crash between creating it and the first write).
 */
export async function repairFile (path: string, compression: Compression, tornDir: string, logger: FastifyBaseLogger, now: () => number): Promise<RepairResult> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (info === undefined) return 'missing'
  if (info.size === 0) {
    await rm(path, { force: true })
    return 'removed-empty'
  }
  // Files are bounded by flushEveryBytes; recovery runs once per file left open by a crash.
  const data = await readFile(path)
  const keep = completeLength(data, compression)
  if (keep === data.length) return 'intact'
  await mkdir(tornDir, { recursive: true })
  const aside = join(tornDir, `${basename(path)}.${now()}.torn`)
  await writeFile(aside, data.subarray(keep))
  const handle = await open(path, 'r+')
  try {
    await handle.truncate(keep)
    await handle.sync()
  } finally {
    await handle.close()
  }
  logger.warn({ file: path, keptBytes: keep, tornBytes: data.length - keep, movedTo: aside },
    'cut a torn tail left by a crash (never acknowledged); the bytes are kept aside')
  if (keep === 0) await rm(path, { force: true })
  return 'repaired'
}
