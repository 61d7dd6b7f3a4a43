import { createGunzip, createInflate, createInflateRaw } from 'node:zlib'
import type { Readable } from 'node:stream'
import type { BodyKind } from './json-scan.js'
import {
  EVS_ERR_BODY_ABORTED, EVS_ERR_BODY_ENCODING_UNSUPPORTED, EVS_ERR_BODY_GZIP_INVALID, EVS_ERR_BODY_TIMEOUT,
  EVS_ERR_BODY_TOO_LARGE, EVS_ERR_MEDIA_TYPE_UNSUPPORTED
} from './errors.js'

// The transport side of a request body: its media type, its bytes as they arrive, its encoding.
// What the bytes mean is parse-events.ts's business.

/**
 * Bodies being read or decoded, each with the function that stops it with an error: a reload or a
 * shutdown interrupts them rather than wait for a slow client.
 */
export type BodyInterrupts = Set<(err: Error) => void>

export const NDJSON_TYPES = new Set(['application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines', 'application/jsonlines'])
// Parsed by content: the DSS client's header is unconfirmed, and `curl -d` sends a form type.
export const AUTO_TYPES = new Set(['application/json', 'text/plain', 'text/json', 'application/octet-stream', 'application/x-www-form-urlencoded'])

export function bodyKind (contentType: string | undefined): BodyKind {
  if (contentType === undefined) return 'auto'
  const semicolon = contentType.indexOf(';')
  const mediaType = (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase()
  if (mediaType === '' || AUTO_TYPES.has(mediaType) || mediaType.endsWith('+json')) return 'auto'
  if (NDJSON_TYPES.has(mediaType)) return 'ndjson'
  throw new EVS_ERR_MEDIA_TYPE_UNSUPPORTED(mediaType.slice(0, 100))
}

export interface ReadBodyOptions {
  /** Largest body accepted (413 beyond). */
  limit: number
  declaredLength: number | undefined
  /** Longest wait for the next chunk before giving up with 408. */
  idleMs: number
  /** Called with the bytes read so far after each chunk; throwing refuses the body with that error. */
  onProgress?: (total: number) => void
  /** Where the read registers itself while it runs. */
  interrupts?: BodyInterrupts
}

/**
 * Reads a request body. Fails as soon as it exceeds `limit` bytes (413), when no byte arrives for
 * `idleMs` (408), when `onProgress` refuses it, or when the client goes away; every path removes
 * its listeners and its timer.
 */
export async function readBody (stream: Readable, options: ReadBodyOptions): Promise<Buffer> {
  const { limit, declaredLength, idleMs, onProgress, interrupts } = options
  if (declaredLength !== undefined && declaredLength > limit) throw new EVS_ERR_BODY_TOO_LARGE(limit)
  return await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let total = 0
    const timer = setTimeout(() => fail(new EVS_ERR_BODY_TIMEOUT(idleMs / 1000)), idleMs)
    const cleanup = (): void => {
      clearTimeout(timer)
      interrupts?.delete(fail)
      stream.removeListener('data', onData)
      stream.removeListener('end', onEnd)
      stream.removeListener('error', fail)
      stream.removeListener('aborted', onAborted)
      stream.removeListener('close', onAborted)
    }
    const fail = (err: Error): void => {
      cleanup()
      chunks.length = 0
      reject(err)
    }
    const onData = (chunk: Buffer): void => {
      total += chunk.length
      if (total > limit) {
        fail(new EVS_ERR_BODY_TOO_LARGE(limit))
        return
      }
      if (onProgress !== undefined) {
        try {
          onProgress(total)
        } catch (err) {
          fail(err as Error)
          return
        }
      }
      chunks.push(chunk)
      timer.refresh()
    }
    const onEnd = (): void => {
      cleanup()
      resolve(chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks, total))
    }
    const onAborted = (): void => { fail(new EVS_ERR_BODY_ABORTED()) }
    interrupts?.add(fail)
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', fail)
    stream.on('aborted', onAborted)
    stream.on('close', onAborted)
  })
}

export interface DecodeOptions {
  /** Largest decoded body accepted (413 beyond). */
  limit: number
  /** Called with each decoded chunk's size; throwing stops the decoding with that error. */
  onChunk?: (bytes: number) => void
  interrupts?: BodyInterrupts
}

/**
 * Undoes the Content-Encoding as a stream, so each decoded chunk is counted (and can be refused)
 * as it comes: a small compressed body may decode to `limit` bytes.
 */
export async function decodeBody (body: Buffer, contentEncoding: string | undefined, options: DecodeOptions): Promise<Buffer> {
  const encoding = (contentEncoding ?? '').trim().toLowerCase()
  if (encoding === '' || encoding === 'identity') return body
  let decoder
  if (encoding === 'gzip' || encoding === 'x-gzip') {
    decoder = createGunzip()
  } else if (encoding === 'deflate') {
    // RFC 9110's deflate is the zlib format; some clients send a bare deflate stream instead.
    const zlibWrapped = body.length >= 2 && ((body[0] as number) & 0x0f) === 8 && ((body[0] as number) * 256 + (body[1] as number)) % 31 === 0
    decoder = zlibWrapped ? createInflate() : createInflateRaw()
  } else {
    throw new EVS_ERR_BODY_ENCODING_UNSUPPORTED(encoding.slice(0, 50))
  }
  const { limit, onChunk, interrupts } = options
  return await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let total = 0
    const fail = (err: Error): void => {
      interrupts?.delete(fail)
      decoder.removeAllListeners('data')
      decoder.destroy()
      chunks.length = 0
      reject(err)
    }
    decoder.on('data', (chunk: Buffer) => {
      total += chunk.length
      if (total > limit) {
        fail(new EVS_ERR_BODY_TOO_LARGE(limit))
        return
      }
      try {
        onChunk?.(chunk.length)
      } catch (err) {
        fail(err as Error)
        return
      }
      chunks.push(chunk)
    })
    decoder.on('error', (err) => { fail(new EVS_ERR_BODY_GZIP_INVALID(encoding, err.message)) })
    decoder.on('end', () => {
      interrupts?.delete(fail)
      resolve(Buffer.concat(chunks, total))
    })
    interrupts?.add(fail)
    decoder.end(body)
  })
}
