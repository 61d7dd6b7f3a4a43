import { open as openFile } from 'node:fs/promises'
import { gunzipSync } from 'node:zlib'
import { parquetMetadataAsync, parquetRead, type AsyncBuffer, type Compressors, type FileMetaData, type ParquetParsers } from 'hyparquet'
import { canAppend } from '../../core/plugin-api.js'
import type { FileToRead, StoredFormat } from './formats.js'
import { pastSkip } from './past-skip.js'
import { loadZstd } from './zstd.js'

/**
 * Reading `.parquet` files back (docs/parquet.md) as the JSON lines a `jsonl` destination would
 * have stored for the same events: `{"clientEvent":…,"origAddress":…,"serverTimestamp":…}`, with
 * `clientEvent` byte for byte as received. A file is read one row group at a time (memory is
 * bounded by a row group), only the three columns a line needs; a row group whose
 * `serverTimestamp` statistics lie outside the query's time range is not read at all.
 *
 * A Parquet file is written whole, then renamed or uploaded: there is no half-written case, and
 * a file that cannot be decoded is corrupt.
 */

const COLUMNS = ['serverTimestamp', 'origAddress', 'clientEvent']
const LINE_HEAD = Buffer.from('{"clientEvent":')

/** Keep what the lines need as it is: instants as numbers, the JSON column as its bytes. */
const PARSERS: Partial<ParquetParsers> = {
  timestampFromMilliseconds: (millis: bigint) => Number(millis),
  jsonFromBytes: (bytes: Uint8Array) => bytes
}

let compressors: Promise<Compressors> | undefined

/** The codecs the files destination writes besides snappy (which hyparquet has): zstd, gzip. */
async function decompressors (): Promise<Compressors> {
  compressors ??= loadZstd().then((zstd) => ({
    // Other writers' pages may not give their size in the frame header: the page header does.
    ZSTD: (input: Uint8Array, outputLength: number) => zstd.decompress(input, { defaultHeapSize: outputLength }),
    GZIP: (input: Uint8Array) => gunzipSync(input)
  }))
  return await compressors
}

interface Source {
  readonly buffer: AsyncBuffer
  close(): Promise<void>
}

/**
 * The file as an AsyncBuffer: on a local connection, byte ranges read from the file as the reader
 * asks for them (the footer, then each row group's column chunks); on an object store, the whole
 * object read into memory (the Connection interface has no range reads).
 */
async function openSource (file: FileToRead): Promise<Source> {
  const { connection, stats } = file
  if (canAppend(connection)) {
    const handle = await openFile(connection.localPath(file.key), 'r')
    try {
      stats.filesOpened++
      const { size } = await handle.stat()
      return {
        buffer: {
          byteLength: size,
          async slice (start: number, end = size): Promise<ArrayBuffer> {
            file.signal?.throwIfAborted()
            const bytes = Buffer.allocUnsafeSlow(Math.max(0, end - start))
            let at = 0
            while (at < bytes.length) {
              const { bytesRead } = await handle.read(bytes, at, bytes.length - at, start + at)
              if (bytesRead === 0) throw new Error(`ends at byte ${start + at}, before ${end}`)
              at += bytesRead
            }
            stats.bytesRead += bytes.length
            return bytes.buffer as ArrayBuffer
          }
        },
        close: async () => { await handle.close() }
      }
    } catch (err) {
      await handle.close()
      throw err
    }
  }
  const stream = await connection.read(file.key)
  stats.filesOpened++
  const chunks: Buffer[] = []
  try {
    for await (const chunk of stream) {
      file.signal?.throwIfAborted()
      chunks.push(chunk as Buffer)
      stats.bytesRead += (chunk as Buffer).length
    }
  } finally {
    stream.destroy()
  }
  const whole = Buffer.concat(chunks)
  return {
    buffer: {
      byteLength: whole.length,
      slice: (start: number, end = whole.length) => whole.buffer.slice(whole.byteOffset + start, whole.byteOffset + end) as ArrayBuffer
    },
    close: async () => {}
  }
}

function statistic (value: unknown): number | undefined {
  return typeof value === 'number' ? value : typeof value === 'bigint' ? Number(value) : value instanceof Date ? value.getTime() : undefined
}

/** Whether the row group's `serverTimestamp` statistics put all its rows outside [from, to). */
function outside (metadata: FileMetaData, group: number, from: number, to: number): boolean {
  const column = metadata.row_groups[group]?.columns.find((c) => c.meta_data?.path_in_schema.join('.') === 'serverTimestamp')
  const s = column?.meta_data?.statistics
  const min = statistic(s?.min_value ?? s?.min)
  const max = statistic(s?.max_value ?? s?.max)
  return (max !== undefined && max < from) || (min !== undefined && min >= to)
}

function checkSchema (metadata: FileMetaData): void {
  const names = new Set(metadata.schema.slice(1).map((e) => e.name))
  const missing = COLUMNS.filter((c) => !names.has(c))
  if (missing.length > 0) throw new Error(`not a Parquet file of dss-event-server: no column ${missing.join(', ')}`)
}

/** The rows of one row group as JSON lines, in blocks of about `blockBytes`. */
function * lines (file: FileToRead, rows: unknown[][], blockBytes: number): Generator<Buffer> {
  let block = Buffer.allocUnsafe(blockBytes)
  let used = 0
  for (const [time, address, event] of rows) {
    if (typeof time !== 'number' || !Number.isFinite(time) || typeof address !== 'string' || (typeof event !== 'string' && !(event instanceof Uint8Array))) {
      throw new Error('a row lacks serverTimestamp, origAddress or clientEvent')
    }
    const bytes = typeof event === 'string' ? Buffer.from(event) : event
    const tail = `,"origAddress":${JSON.stringify(address)},"serverTimestamp":"${file.zone.timestamp(time)}"}\n`
    const length = LINE_HEAD.length + bytes.length + Buffer.byteLength(tail)
    if (used + length > block.length) {
      if (used > 0) yield block.subarray(0, used)
      block = Buffer.allocUnsafe(Math.max(blockBytes, length))
      used = 0
    }
    used += LINE_HEAD.copy(block, used)
    block.set(bytes, used)
    used += bytes.length
    used += block.write(tail, used)
  }
  if (used > 0) yield block.subarray(0, used)
}

export const parquet: StoredFormat = {
  extension: '.parquet',
  decode (file, from) {
    async function * blocks (): AsyncGenerator<Buffer> {
      const source = await openSource(file)
      try {
        const metadata = await parquetMetadataAsync(source.buffer, { parsers: PARSERS })
        checkSchema(metadata)
        const codecs = await decompressors()
        const skip = { left: from.skip }
        let groupStart = 0
        for (let g = 0; g < metadata.row_groups.length; g++) {
          const rowCount = Number(metadata.row_groups[g]?.num_rows ?? 0)
          const start = groupStart
          groupStart += rowCount
          if (rowCount === 0 || outside(metadata, g, file.from, file.to)) continue
          file.signal?.throwIfAborted()
          let rows: unknown[][] = []
          await parquetRead({
            file: source.buffer,
            metadata,
            rowStart: start,
            rowEnd: start + rowCount,
            columns: COLUMNS,
            compressors: codecs,
            parsers: PARSERS,
            onComplete: (r: unknown[][]) => { rows = r }
          })
          for (const block of lines(file, rows, file.blockBytes)) {
            const rest = pastSkip(block, skip)
            if (rest.length > 0) yield rest
          }
        }
      } finally {
        await source.close()
      }
    }
    return {
      blocks: blocks(),
      // A file is never appended to: a resume decodes it again and skips what was read.
      resumeAt: (decoded) => ({ offset: 0, skip: from.skip + decoded }),
      truncated: false
    }
  }
}
