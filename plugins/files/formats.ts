import { open as openFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip, constants as zlibConstants } from 'node:zlib'
import { canAppend, type Connection, type QueryStats, type ZonedTime } from '../../core/plugin-api.js'
import { parquet } from './parquet-read.js'
import { pastSkip } from './past-skip.js'
import { loadZstd, zstdFrames } from './zstd.js'

/**
 * Where a read of a file stopped, to resume there when the file grows (`--follow`): `offset` bytes
 * of the stored file, then `skip` bytes of what they decode to.
 */
export interface ReadCursor {
  readonly offset: number
  readonly skip: number
}

export const START: ReadCursor = { offset: 0, skip: 0 }

/**
 * Read buffers of one query, kept for the next file: fresh memory costs page faults (measured: a
 * first pass over new buffers takes several times the CPU of a pass over reused ones).
 */
export class BlockPool {
  readonly #free = new Map<number, Buffer[]>()
  readonly #max: number
  #kept = 0

  constructor (maxBuffers = 16) {
    this.#max = maxBuffers
  }

  take (size: number): Buffer {
    return this.#free.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size)
  }

  give (buffer: Buffer): void {
    if (this.#kept >= this.#max || buffer.byteOffset !== 0 || buffer.length !== buffer.buffer.byteLength) return
    let list = this.#free.get(buffer.length)
    if (list === undefined) this.#free.set(buffer.length, list = [])
    list.push(buffer)
    this.#kept++
  }
}

export interface FileToRead {
  readonly key: string
  readonly connection: Connection
  readonly stats: QueryStats
  readonly signal: AbortSignal | undefined
  /** Preferred size of the blocks read, in bytes. */
  readonly blockBytes: number
  /** The object's size when listed (it may have grown since): smaller files get smaller buffers. */
  readonly size: number
  readonly pool: BlockPool
  /** `server.timeZone`: the offset of `serverTimestamp` in lines made from a format that stores instants (Parquet). */
  readonly zone: ZonedTime
  /** The query's time range (ms): a format may skip parts it knows are outside it; lines are still checked one by one. */
  readonly from: number
  readonly to: number
}

/** A file's content as JSON lines, in blocks; a line may span blocks. */
export interface DecodedFile {
  readonly blocks: AsyncIterable<Buffer>
  /** The cursor that resumes after the first `decoded` bytes of `blocks`. */
  resumeAt(decoded: number): ReadCursor
  /** After the blocks are read: whether the file ended inside a compressed member (still being written). */
  readonly truncated: boolean
}

/**
 * A stored file format: how files whose name ends with `extension` decode to JSON lines (the lines
 * the server writes, whatever the file holds). A new format is one more entry in FORMATS.
 */
export interface StoredFormat {
  readonly extension: string
  decode(file: FileToRead, from: ReadCursor): DecodedFile
}

/**
 * The object's bytes from `offset` on: straight from disk on a local connection, else streamed from
 * the store. With `reuse`, the caller is done with a block when it asks for the next one: two
 * buffers then serve the whole file (no garbage per block).
 */
export async function * storedBytes (file: FileToRead, offset: number, reuse: boolean): AsyncGenerator<Buffer> {
  const { connection, stats, signal } = file
  if (canAppend(connection)) {
    const handle = await openFile(connection.localPath(file.key), 'r')
    stats.filesOpened++
    const size = file.size - offset < file.blockBytes ? Math.max(16 * 1024, file.size - offset + 1) : file.blockBytes
    const spare: Buffer[] = []
    let next: Promise<{ block: Buffer, full: boolean }> | undefined
    try {
      let position = offset
      const read = async (): Promise<{ block: Buffer, full: boolean }> => {
        const buffer = spare.pop() ?? (reuse ? file.pool.take(size) : Buffer.allocUnsafe(size))
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position)
        position += bytesRead
        if (bytesRead < buffer.length && reuse) spare.push(buffer)
        return { block: bytesRead === buffer.length ? buffer : Buffer.from(buffer.subarray(0, bytesRead)), full: bytesRead === buffer.length }
      }
      next = read()
      let previous: Buffer | undefined
      while (next !== undefined) {
        const { block, full }: { block: Buffer, full: boolean } = await next
        next = undefined
        if (previous !== undefined) spare.push(previous)
        previous = undefined
        if (block.length === 0) return
        signal?.throwIfAborted()
        // A short read of a regular file is its end. After a full one, read ahead: the disk (or
        // page cache) works while the caller scans this block.
        if (full) {
          next = read()
          next.catch(() => {})
        }
        stats.bytesRead += block.length
        yield block
        if (reuse && full) previous = block
      }
      return
    } finally {
      // A read still under way writes into its buffer: wait for it before the buffer is reused.
      const pending = await next?.catch(() => undefined)
      if (reuse) {
        if (pending?.full === true) spare.push(pending.block)
        for (const buffer of spare) file.pool.give(buffer)
      }
      await handle.close()
    }
  }
  const stream: Readable = await connection.read(file.key)
  stats.filesOpened++
  try {
    const skip = { left: offset }
    for await (const chunk of stream) {
      signal?.throwIfAborted()
      stats.bytesRead += (chunk as Buffer).length
      const block = pastSkip(chunk as Buffer, skip)
      if (block.length > 0) yield block
    }
  } finally {
    stream.destroy()
  }
}

export const jsonl: StoredFormat = {
  extension: '.jsonl',
  decode (file, from) {
    return {
      blocks: storedBytes(file, from.offset + from.skip, true),
      resumeAt: (decoded) => ({ offset: from.offset + from.skip + decoded, skip: 0 }),
      truncated: false
    }
  }
}

/** Each commit of the writer is one gzip member; a reader may find the last one half written. */
export const jsonlGz: StoredFormat = {
  extension: '.jsonl.gz',
  decode (file, from) {
    let consumed = 0
    let clean = false
    let truncated = false
    let total = 0
    async function * blocks (): AsyncGenerator<Buffer> {
      const input = Readable.from((async function * () {
        for await (const block of storedBytes(file, from.offset, false)) {
          consumed += block.length
          yield block
        }
      })(), { objectMode: false, highWaterMark: 1 })
      const gunzip = createGunzip({ chunkSize: Math.min(file.blockBytes, 256 * 1024) })
      // Errors reach the loop below through gunzip; stopping early destroys both streams.
      const piped = pipeline(input, gunzip).catch(() => {})
      const skip = { left: from.skip }
      try {
        for await (const chunk of gunzip) {
          const block = pastSkip(chunk as Buffer, skip)
          if (block.length === 0) continue
          total += block.length
          yield block
        }
        clean = true
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        if (e.code === 'Z_BUF_ERROR' || e.errno === zlibConstants.Z_BUF_ERROR) {
          truncated = true
          return
        }
        throw err
      } finally {
        gunzip.destroy()
        await piped
      }
    }
    return {
      blocks: blocks(),
      resumeAt: (decoded) => clean && decoded === total ? { offset: from.offset + consumed, skip: 0 } : { offset: from.offset, skip: from.skip + decoded },
      get truncated () { return truncated }
    }
  }
}

/** Past this many bytes, what is left of a zstd stream without a whole frame in it is corrupt, not a commit being written. */
const MAX_FRAME_BYTES = 256 * 1024 * 1024
/** Frame ends remembered to resume at (the latest ones: a resume from an earlier one only decodes more). */
const FRAME_ENDS_KEPT = 64
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])

/** Whether `rest` can be the start of a zstd frame (or of a skippable one) that is not whole yet. */
function frameStart (rest: Buffer): boolean {
  if (rest.length < 4) return ZSTD_MAGIC.subarray(0, rest.length).equals(rest) || (rest[0] ?? 0) >> 4 === 5
  const magic = rest.readUInt32LE(0)
  return magic === 0xfd2fb528 || (magic & 0xfffffff0) === 0x184d2a50
}

/**
 * Each commit of the writer is one zstd frame, whose header gives its decoded size: whole frames
 * are decoded as they arrive (memory is bounded by a commit), and a reader may find the last one
 * half written.
 */
export const jsonlZst: StoredFormat = {
  extension: '.jsonl.zst',
  decode (file, from) {
    let truncated = false
    // [stored offset after the frame (from `from.offset`), decoded bytes up to it (from there too)]
    const ends: Array<[number, number]> = []
    async function * blocks (): AsyncGenerator<Buffer> {
      const zstd = await loadZstd()
      let carry: Buffer | undefined
      let stored = 0
      let decodedTotal = 0
      const skip = { left: from.skip }
      for await (const block of storedBytes(file, from.offset, false)) {
        const data = carry === undefined ? block : Buffer.concat([carry, block])
        const base = stored - (carry?.length ?? 0)
        stored += block.length
        const { frames, complete } = zstdFrames(data)
        const out: Buffer[] = []
        for (const [start, end] of frames) {
          // Skippable frames (metadata) decode to nothing.
          if (data.readUInt32LE(start) === 0xfd2fb528) {
            const frame = zstd.decompress(data.subarray(start, end))
            const bytes = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength)
            decodedTotal += bytes.length
            const rest = pastSkip(bytes, skip)
            if (rest.length > 0) out.push(rest)
          }
          ends.push([base + end, decodedTotal])
          if (ends.length > FRAME_ENDS_KEPT) ends.shift()
        }
        carry = complete < data.length ? Buffer.from(data.subarray(complete)) : undefined
        // The whole frames first: what precedes bad bytes is read.
        if (out.length > 0) yield out.length === 1 ? out[0] as Buffer : Buffer.concat(out)
        if (carry !== undefined && (!frameStart(carry) || carry.length > MAX_FRAME_BYTES)) {
          throw new Error(`not zstd data at byte ${from.offset + base + complete}`)
        }
      }
      truncated = carry !== undefined
    }
    return {
      blocks: blocks(),
      resumeAt: (decoded) => {
        const at = from.skip + decoded
        for (let i = ends.length - 1; i >= 0; i--) {
          const [stored, total] = ends[i] as [number, number]
          if (total <= at) return { offset: from.offset + stored, skip: at - total }
        }
        return { offset: from.offset, skip: at }
      },
      get truncated () { return truncated }
    }
  }
}

/** Formats, by file name ending; the longest ending wins. */
export const FORMATS: readonly StoredFormat[] = [jsonlGz, jsonlZst, jsonl, parquet]

export function formatOf (name: string): StoredFormat | undefined {
  let found: StoredFormat | undefined
  for (const format of FORMATS) {
    if (name.endsWith(format.extension) && (found === undefined || format.extension.length > found.extension.length)) found = format
  }
  return found
}
