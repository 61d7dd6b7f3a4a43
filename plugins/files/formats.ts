import { open as openFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip, constants as zlibConstants } from 'node:zlib'
import type { Connection } from '../../core/connection.js'
import type { QueryStats } from '../../core/destination.js'

/**
 * Where a read of a file stopped, to resume there when the file grows (`--follow`): `offset` bytes
 * of the stored file, then `skip` bytes of what they decode to.
 */
export interface ReadCursor {
  readonly offset: number
  readonly skip: number
}

export const START: ReadCursor = { offset: 0, skip: 0 }

export interface FileToRead {
  readonly key: string
  readonly connection: Connection
  readonly stats: QueryStats
  readonly signal: AbortSignal | undefined
  /** Preferred size of the blocks read, in bytes. */
  readonly blockBytes: number
  /** The object's size when listed (it may have grown since): smaller files get smaller buffers. */
  readonly size: number
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
 * A stored file format: how files whose name ends with `extension` decode to JSON lines. A new
 * format (Parquet, ...) is one more entry in FORMATS.
 */
export interface StoredFormat {
  readonly extension: string
  decode(file: FileToRead, from: ReadCursor): DecodedFile
}

/** The object's bytes from `offset` on: straight from disk on a local connection, else streamed from the store. */
async function * storedBytes (file: FileToRead, offset: number): AsyncGenerator<Buffer> {
  const { connection, stats, signal } = file
  if (connection.localPath !== undefined) {
    const handle = await openFile(connection.localPath(file.key), 'r')
    stats.filesOpened++
    try {
      let position = offset
      const read = async (): Promise<{ block: Buffer, full: boolean }> => {
        const buffer = Buffer.allocUnsafe(Math.min(file.blockBytes, Math.max(16 * 1024, file.size - position + 1)))
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position)
        position += bytesRead
        return { block: bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead), full: bytesRead === buffer.length }
      }
      let next: Promise<{ block: Buffer, full: boolean }> | undefined = read()
      while (next !== undefined) {
        const { block, full }: { block: Buffer, full: boolean } = await next
        if (block.length === 0) return
        signal?.throwIfAborted()
        // A short read of a regular file is its end. After a full one, read ahead: the disk (or
        // page cache) works while the caller scans this block.
        next = full ? read() : undefined
        next?.catch(() => {})
        stats.bytesRead += block.length
        yield block
      }
      return
    } finally {
      await handle.close()
    }
  }
  const stream: Readable = await connection.read(file.key)
  stats.filesOpened++
  try {
    let toSkip = offset
    for await (const chunk of stream) {
      signal?.throwIfAborted()
      let block = chunk as Buffer
      stats.bytesRead += block.length
      if (toSkip > 0) {
        const cut = Math.min(toSkip, block.length)
        toSkip -= cut
        block = block.subarray(cut)
        if (block.length === 0) continue
      }
      yield block
    }
  } finally {
    stream.destroy()
  }
}

export const jsonl: StoredFormat = {
  extension: '.jsonl',
  decode (file, from) {
    return {
      blocks: storedBytes(file, from.offset + from.skip),
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
        for await (const block of storedBytes(file, from.offset)) {
          consumed += block.length
          yield block
        }
      })(), { objectMode: false, highWaterMark: 1 })
      const gunzip = createGunzip({ chunkSize: Math.min(file.blockBytes, 1024 * 1024) })
      // Errors reach the loop below through gunzip; stopping early destroys both streams.
      const piped = pipeline(input, gunzip).catch(() => {})
      let skip = from.skip
      try {
        for await (const chunk of gunzip) {
          let block = chunk as Buffer
          if (skip > 0) {
            const cut = Math.min(skip, block.length)
            skip -= cut
            block = block.subarray(cut)
            if (block.length === 0) continue
          }
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

/** Formats, by file name ending; the longest ending wins. */
export const FORMATS: readonly StoredFormat[] = [jsonlGz, jsonl]

export function formatOf (name: string): StoredFormat | undefined {
  let found: StoredFormat | undefined
  for (const format of FORMATS) {
    if (name.endsWith(format.extension) && (found === undefined || format.extension.length > found.extension.length)) found = format
  }
  return found
}
