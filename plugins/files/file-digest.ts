import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { loadZstd, zstdFrames, type Zstd } from './zstd.js'

export interface FileDigest {
  bytes: number
  /** Hex SHA-256 of the bytes as stored. */
  sha256: string
  /** MD5 of the bytes (base64), when asked for: some stores check uploads against it. */
  md5?: string
  /** Events: lines of a JSON-lines file, rows of a Parquet file. */
  lines: number
  /**
   * Reception times (ISO-8601 UTC), from `serverTimestamp`: of the first and last line of a
   * JSON-lines file; the lowest and highest of a Parquet file's column.
   */
  firstAt: string | null
  lastAt: string | null
}

/** How a data file holds its events; the hashes are always of the bytes as stored. */
export type DigestContent = 'jsonl' | 'jsonl.gz' | 'jsonl.zst' | 'parquet'

/** The content of a data file, from its name (a file may predate the current settings). */
export function contentOfKey (key: string): DigestContent | undefined {
  if (key.endsWith('.parquet')) return 'parquet'
  if (key.endsWith('.jsonl.gz')) return 'jsonl.gz'
  if (key.endsWith('.jsonl.zst')) return 'jsonl.zst'
  if (key.endsWith('.jsonl')) return 'jsonl'
  return undefined
}

export interface DigestRequest {
  path: string
  /** Compressed JSON lines are counted from the decompressed stream; Parquet from its footer. */
  content: DigestContent
  md5: boolean
  /** False: only the hashes and the size (lines 0, times null); `content` is then ignored. */
  lines?: boolean
}

/** The content of a file cannot be read as its name says (the hashes could be): `code` of the error. */
export const UNREADABLE_CONTENT = 'UNREADABLE_CONTENT'

type Hyparquet = typeof import('hyparquet')

/** Packages the digest code uses, loaded on first use (once per thread: zstd's WebAssembly instance is not to be set up twice). */
interface Modules {
  zstd(): Promise<Zstd>
  hyparquet(): Promise<Hyparquet>
}

/** What the worker loads by path: the tests run the TypeScript sources, the server the compiled ones. */
interface WorkerData {
  lowPriority: boolean
  /** @bokuweb/zstd-wasm's CommonJS entry, for `.jsonl.zst`. */
  zstdPath: string
  /** hyparquet's entry (an ES module), for Parquet footers. */
  hyparquetUrl: string
}

/**
 * Hashes and counts files, one at a time (they share the read buffer, and the disk is the limit
 * anyway). Self-contained: it reaches modules only through `load` (a worker's `require`, or one
 * made for the calling module) and is given the zstd frame walker and its packages' loaders, so
 * that the digest worker runs this same code from its source.
 */
function digestCore (load: NodeJS.Require, frames: typeof zstdFrames, modules: Modules): { run(job: DigestRequest): Promise<FileDigest> } {
  const fs = load('node:fs') as typeof import('node:fs')
  const crypto = load('node:crypto') as typeof import('node:crypto')
  const zlib = load('node:zlib') as typeof import('node:zlib')
  const { once } = load('node:events') as typeof import('node:events')
  const CHUNK = 4 * 1024 * 1024
  const buffer = Buffer.allocUnsafe(CHUNK)
  const unreadable = (message: string): Error => Object.assign(new Error(message), { code: 'UNREADABLE_CONTENT' })
  // `"serverTimestamp":"2026-11-26T02:47:43.123+0000"}` ends every line: the last bytes before a newline hold it.
  const TAIL = 96
  const timestamp = (before: string): string | null => {
    const match = /"serverTimestamp":"([^"]+)"\}$/.exec(before)
    if (match === null) return null
    const ms = Date.parse(match[1] as string)
    return Number.isNaN(ms) ? null : new Date(ms).toISOString()
  }
  interface Counted { lines: number, firstAt: string | null, lastAt: string | null }
  // Counts lines and reads the first and last line's timestamps from a stream of plain bytes.
  const lineScanner = () => {
    let lines = 0
    let firstAt: string | null | undefined
    let lastAt: string | null = null
    let tail = ''
    return {
      push (data: Buffer): void {
        const first = data.indexOf(10)
        if (first === -1) {
          tail = (tail + data.toString('latin1', Math.max(0, data.length - TAIL))).slice(-TAIL)
          return
        }
        for (let at = first; at !== -1; at = data.indexOf(10, at + 1)) lines++
        const last = data.lastIndexOf(10)
        const beforeFirst = (tail + data.toString('latin1', Math.max(0, first - TAIL), first)).slice(-TAIL)
        if (firstAt === undefined) firstAt = timestamp(beforeFirst)
        lastAt = last === first ? timestamp(beforeFirst) : timestamp(data.toString('latin1', Math.max(0, last - TAIL), last))
        tail = data.toString('latin1', Math.max(last + 1, data.length - TAIL))
      },
      result: (): Counted => ({ lines, firstAt: firstAt ?? null, lastAt })
    }
  }
  interface Sink {
    /** Takes the next bytes as stored (`data` is reused after it resolves). */
    push(data: Buffer): Promise<void> | void
    end(): Promise<Counted>
  }
  const plainSink = (): Sink => {
    const scanner = lineScanner()
    return { push: (chunk) => scanner.push(chunk), end: async () => scanner.result() }
  }
  const gzipSink = (): Sink => {
    const scanner = lineScanner()
    const inflate = zlib.createGunzip()
    const inflated = new Promise((resolve, reject) => {
      inflate.on('data', (chunk: Buffer) => scanner.push(chunk))
      inflate.on('end', resolve)
      inflate.on('error', (err: Error) => reject(unreadable(`cannot decompress: ${err.message}`)))
    })
    inflated.catch(() => {})
    return {
      async push (chunk) {
        if (!inflate.write(Buffer.from(chunk))) await Promise.race([once(inflate, 'drain'), inflated])
      },
      async end () {
        inflate.end()
        await inflated
        return scanner.result()
      }
    }
  }
  // One frame per commit (a commit holds at most server.maxInFlightBytes of lines, compressed).
  const MAX_ZSTD_FRAME_BYTES = 1024 * 1024 * 1024
  // One frame per commit: each whole frame is decoded as soon as its last byte is read.
  const zstdSink = (): Sink => {
    const scanner = lineScanner()
    let pending = Buffer.alloc(0)
    let offset = 0
    return {
      async push (chunk) {
        const zstd = await modules.zstd()
        pending = pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([pending, chunk])
        const { frames: whole, complete } = frames(pending)
        for (const [start, end] of whole) {
          if ((pending.readUInt32LE(start) & 0xfffffff0) === 0x184d2a50) continue // a skippable frame holds no lines
          try {
            scanner.push(Buffer.from(zstd.decompress(pending.subarray(start, end))))
          } catch (err) {
            throw unreadable(`cannot decompress the zstd frame at byte ${offset + start}: ${(err as Error).message}`)
          }
        }
        offset += complete
        pending = Buffer.from(pending.subarray(complete))
        // What follows the whole frames must be the start of one: else the rest would pile up here.
        if (pending.length >= 4) {
          const magic = pending.readUInt32LE(0)
          if (magic !== 0xfd2fb528 && (magic & 0xfffffff0) !== 0x184d2a50) throw unreadable(`not a zstd frame at byte ${offset}`)
        }
        if (pending.length > MAX_ZSTD_FRAME_BYTES) throw unreadable(`a zstd frame at byte ${offset} is larger than ${MAX_ZSTD_FRAME_BYTES} bytes`)
      },
      async end () {
        if (pending.length > 0) throw unreadable(`cannot decompress: not a whole zstd stream, the frames end at byte ${offset}`)
        return scanner.result()
      }
    }
  }
  // Rows from the footer; reception times from the serverTimestamp column's statistics, or from
  // the column itself in a file without them.
  const parquetSink = (path: string): Sink => ({
    push: () => {},
    async end () {
      const hyparquet = await modules.hyparquet()
      const parsers = { timestampFromMilliseconds: (ms: bigint | number) => Number(ms) }
      const file = await hyparquet.asyncBufferFromFile(path)
      let metadata
      try {
        metadata = await hyparquet.parquetMetadataAsync(file, { parsers })
      } catch (err) {
        throw unreadable(`cannot read the Parquet footer: ${(err as Error).message}`)
      }
      const rows = Number(metadata.num_rows)
      let low = Number.POSITIVE_INFINITY
      let high = Number.NEGATIVE_INFINITY
      let complete = true
      for (const group of metadata.row_groups) {
        if (Number(group.num_rows) === 0) continue
        const chunk = group.columns.find((c) => c.meta_data?.path_in_schema.join('.') === 'serverTimestamp')
        const stats = chunk?.meta_data?.statistics
        const min = stats?.min_value ?? stats?.min
        const max = stats?.max_value ?? stats?.max
        if (typeof min !== 'number' || typeof max !== 'number') {
          complete = false
          break
        }
        low = Math.min(low, min)
        high = Math.max(high, max)
      }
      if (!complete) {
        low = Number.POSITIVE_INFINITY
        high = Number.NEGATIVE_INFINITY
        try {
          const zstd = await modules.zstd()
          await hyparquet.parquetRead({
            file,
            metadata,
            columns: ['serverTimestamp'],
            parsers,
            compressors: { ZSTD: (input) => zstd.decompress(input), GZIP: (input) => zlib.gunzipSync(input) },
            onChunk: ({ columnData }) => {
              const values = columnData as ArrayLike<unknown>
              for (let i = 0; i < values.length; i++) {
                const value = values[i]
                if (typeof value !== 'number') continue
                if (value < low) low = value
                if (value > high) high = value
              }
            }
          })
        } catch (err) {
          throw unreadable(`cannot read the serverTimestamp column: ${(err as Error).message}`)
        }
      }
      const iso = (ms: number): string | null => Number.isFinite(ms) ? new Date(ms).toISOString() : null
      return { lines: rows, firstAt: iso(low), lastAt: iso(high) }
    }
  })
  const sinkOf = (content: DigestRequest['content'], path: string): Sink => {
    if (content === 'jsonl.gz') return gzipSink()
    if (content === 'jsonl.zst') return zstdSink()
    if (content === 'parquet') return parquetSink(path)
    return plainSink()
  }
  const run = async (job: DigestRequest): Promise<FileDigest> => {
    const handle = await fs.promises.open(job.path, 'r')
    try {
      const sha = crypto.createHash('sha256')
      const md5 = job.md5 ? crypto.createHash('md5') : undefined
      const sink = job.lines === false ? undefined : sinkOf(job.content, job.path)
      let bytes = 0
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, CHUNK, null)
        if (bytesRead === 0) break
        const chunk = buffer.subarray(0, bytesRead)
        sha.update(chunk)
        md5?.update(chunk)
        bytes += bytesRead
        await sink?.push(chunk)
      }
      const counted = sink === undefined ? { lines: 0, firstAt: null, lastAt: null } : await sink.end()
      return { bytes, sha256: sha.digest('hex'), ...(md5 !== undefined ? { md5: md5.digest('base64') } : {}), ...counted }
    } finally {
      await handle.close()
    }
  }
  let queue: Promise<unknown> = Promise.resolve()
  return {
    run: async (job) => {
      const done = queue.then(async () => await run(job))
      queue = done.catch(() => {})
      return await done
    }
  }
}

/**
 * The digest worker's code, run with `eval` so that it needs no file of its own next to the
 * compiled module (the tests run the TypeScript sources), at the lowest CPU priority: digests are
 * background work, and on a loaded machine they should take the time nobody else wants rather
 * than slow ingestion.
 */
function workerMain (core: typeof digestCore, frames: typeof zstdFrames): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads')
  const fs = require('node:fs') as typeof import('node:fs')
  const os = require('node:os') as typeof import('node:os')
  const data = workerData as WorkerData
  try {
    // Linux: a thread's id names it for setpriority(); elsewhere this just fails.
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop())
    if (Number.isInteger(tid) && data.lowPriority) os.setPriority(tid, 19)
  } catch {}
  let zstd: Promise<Zstd> | undefined
  let hyparquet: Promise<Hyparquet> | undefined
  const { run } = core(require, frames, {
    zstd: async () => await (zstd ??= (async () => {
      const module = require(data.zstdPath) as Zstd & { init(): Promise<void> }
      await module.init()
      return module
    })()),
    // Not an `import()` expression: the tests' transform would rewrite it into a helper the worker lacks.
    // eslint-disable-next-line no-new-func
    hyparquet: async () => await (hyparquet ??= (new Function('url', 'return import(url)') as (url: string) => Promise<Hyparquet>)(data.hyparquetUrl))
  })
  parentPort?.on('message', (job: DigestRequest & { id: number }) => {
    run(job).then(
      (digest) => parentPort.postMessage({ id: job.id, digest }),
      (err: Error & { code?: string }) => parentPort.postMessage({ id: job.id, error: err.message, code: err.code }))
  })
}

/** The worker's source: its code, called with the digest code's and the frame walker's. */
const WORKER_SOURCE = `(${workerMain.toString()})(${digestCore.toString()}, ${zstdFrames.toString()})`

let resolvedData: Omit<WorkerData, 'lowPriority'> | undefined
function modulePaths (): Omit<WorkerData, 'lowPriority'> {
  resolvedData ??= { zstdPath: createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm'), hyparquetUrl: import.meta.resolve('hyparquet') }
  return resolvedData
}

interface Job {
  id: number
  request: DigestRequest
  resolve(digest: FileDigest): void
  reject(err: Error): void
}

interface Slot {
  worker: Worker
  job: Job | undefined
}

export interface FileDigesterOptions {
  /**
   * Files digested at once, each in its own thread (1 by default). 0: one at a time on the
   * calling thread, for a few small files, where starting a thread would cost more than the work.
   */
  workers?: number
  /**
   * Lowest CPU priority (the default): a server's digests are background work and should take
   * the time nobody else wants rather than slow ingestion. `verify` runs at normal priority.
   */
  lowPriority?: boolean
}

/**
 * Digests files in worker threads, one file per thread at a time (the disk and the hash are the
 * work). Threads start on first use and stop with `close`; they never keep the process alive.
 * With no thread (`workers: 0`) the same code runs on the calling thread.
 */
export class FileDigester {
  readonly #size: number
  readonly #lowPriority: boolean
  readonly #slots: Slot[] = []
  readonly #queue: Job[] = []
  #inline: ReturnType<typeof digestCore> | undefined
  #nextId = 1
  #closed = false

  constructor (options: FileDigesterOptions = {}) {
    this.#size = Math.max(0, options.workers ?? 1)
    this.#lowPriority = options.lowPriority ?? true
  }

  async digest (request: DigestRequest): Promise<FileDigest> {
    if (this.#closed) throw new Error('the file digester is closed')
    if (this.#size === 0) return await (this.#inline ??= digestCore(createRequire(import.meta.url), zstdFrames, { zstd: loadZstd, hyparquet: async () => await import('hyparquet') })).run(request)
    return await new Promise<FileDigest>((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, request, resolve, reject })
      this.#pump()
    })
  }

  #pump (): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((s) => s.job === undefined)
      if (slot === undefined && this.#slots.length < this.#size) slot = this.#start()
      if (slot === undefined) return
      const job = this.#queue.shift() as Job
      slot.job = job
      slot.worker.ref()
      slot.worker.postMessage({ id: job.id, ...job.request })
    }
  }

  #start (): Slot {
    const workerData: WorkerData = { lowPriority: this.#lowPriority, ...modulePaths() }
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData })
    const slot: Slot = { worker, job: undefined }
    worker.unref()
    worker.on('message', (message: { id: number, digest?: FileDigest, error?: string, code?: string }) => {
      const job = slot.job
      if (job === undefined || job.id !== message.id) return
      slot.job = undefined
      worker.unref()
      if (message.digest !== undefined) job.resolve(message.digest)
      else job.reject(Object.assign(new Error(message.error ?? 'digest failed'), message.code !== undefined ? { code: message.code } : {}))
      this.#pump()
    })
    const fail = (err: Error): void => {
      const index = this.#slots.indexOf(slot)
      if (index !== -1) this.#slots.splice(index, 1)
      slot.job?.reject(err)
      slot.job = undefined
      if (!this.#closed) this.#pump()
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`the digest worker exited with code ${code}`)))
    this.#slots.push(slot)
    return slot
  }

  async close (): Promise<void> {
    this.#closed = true
    for (const job of this.#queue.splice(0)) job.reject(new Error('the file digester is closed'))
    await Promise.all(this.#slots.splice(0).map(async (slot) => await slot.worker.terminate()))
  }
}
