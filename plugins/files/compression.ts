import { gzip } from 'node:zlib'
import { promisify } from 'node:util'
import { loadZstd } from './zstd.js'

const gzipAsync = promisify(gzip)

/**
 * The lines of one commit as one gzip member or one zstd frame: a file is a sequence of them,
 * which gzip and zstd readers read as one stream. gzip runs in the thread pool; zstd (WebAssembly)
 * runs here, at a few milliseconds per megabyte.
 */
export async function compressLines (compression: 'gzip' | 'zstd', lines: readonly Buffer[], zstdLevel = 3): Promise<Buffer> {
  const data = lines.length === 1 ? lines[0] as Buffer : Buffer.concat(lines)
  if (compression === 'gzip') return await gzipAsync(data)
  const zstd = await loadZstd()
  const frame = zstd.compress(data, zstdLevel)
  return Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength)
}
