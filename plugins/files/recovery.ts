import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import type { FastifyBaseLogger } from 'fastify'
import type { Compression } from './partition-writer.js'
import { zstdFrames } from './zstd.js'

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
export async function repairFile (path: string, compression: Compression, tornDir: string, logger: FastifyBaseLogger): Promise<RepairResult> {
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
  const aside = join(tornDir, `${basename(path)}.${Date.now()}.torn`)
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
