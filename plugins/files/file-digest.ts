import { Worker } from 'node:worker_threads'

export interface FileDigest {
  bytes: number
  /** Hex SHA-256 of the bytes as stored. */
  sha256: string
  /** MD5 of the bytes (base64), when asked for: some stores check uploads against it. */
  md5?: string
  lines: number
  /** Reception time (ISO-8601 UTC) of the first and last line, from their `serverTimestamp`. */
  firstAt: string | null
  lastAt: string | null
}

export interface DigestRequest {
  path: string
  /** `gzip`: lines and times are read from the decompressed stream; the hashes are of the stored bytes. */
  gzip: boolean
  md5: boolean
  /** False: only the hashes and the size (lines 0, times null); `gzip` is then ignored. */
  lines?: boolean
}

/**
 * The worker's code, run with `eval` so that it needs no file of its own next to the compiled
 * module (the tests run the TypeScript sources). It reads each file in large chunks, hashes it and
 * counts its lines, at the lowest CPU priority: digests are background work, and on a loaded
 * machine they should take the time nobody else wants rather than slow ingestion.
 */
function workerMain (): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads')
  const fs = require('node:fs') as typeof import('node:fs')
  const os = require('node:os') as typeof import('node:os')
  const crypto = require('node:crypto') as typeof import('node:crypto')
  const zlib = require('node:zlib') as typeof import('node:zlib')
  const { once } = require('node:events') as typeof import('node:events')
  try {
    // Linux: a thread's id names it for setpriority(); elsewhere this just fails.
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop())
    if (Number.isInteger(tid) && (workerData as { lowPriority: boolean }).lowPriority) os.setPriority(tid, 19)
  } catch {}
  const CHUNK = 4 * 1024 * 1024
  const buffer = Buffer.allocUnsafe(CHUNK)
  // `"serverTimestamp":"2026-11-26T02:47:43.123+0000"}` ends every line: the last bytes before a newline hold it.
  const TAIL = 96
  const timestamp = (before: string): string | null => {
    const match = /"serverTimestamp":"([^"]+)"\}$/.exec(before)
    if (match === null) return null
    const ms = Date.parse(match[1] as string)
    return Number.isNaN(ms) ? null : new Date(ms).toISOString()
  }
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
      result: () => ({ lines, firstAt: firstAt ?? null, lastAt })
    }
  }
  const run = async (job: { path: string, gzip: boolean, md5: boolean, lines?: boolean }): Promise<unknown> => {
    const lines = job.lines !== false
    const handle = await fs.promises.open(job.path, 'r')
    try {
      const sha = crypto.createHash('sha256')
      const md5 = job.md5 ? crypto.createHash('md5') : undefined
      const scanner = lineScanner()
      const inflate = job.gzip && lines ? zlib.createGunzip() : undefined
      const inflated = inflate === undefined
        ? undefined
        : new Promise((resolve, reject) => {
          inflate.on('data', (chunk: Buffer) => scanner.push(chunk))
          inflate.on('end', resolve)
          inflate.on('error', (err: Error) => reject(new Error(`cannot decompress: ${err.message}`)))
        })
      inflated?.catch(() => {})
      let bytes = 0
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, CHUNK, null)
        if (bytesRead === 0) break
        const data = buffer.subarray(0, bytesRead)
        sha.update(data)
        md5?.update(data)
        bytes += bytesRead
        if (!lines) continue
        if (inflate === undefined) scanner.push(data)
        else if (!inflate.write(Buffer.from(data))) await Promise.race([once(inflate, 'drain'), inflated])
      }
      if (inflate !== undefined) {
        inflate.end()
        await inflated
      }
      return { bytes, sha256: sha.digest('hex'), ...(md5 !== undefined ? { md5: md5.digest('base64') } : {}), ...scanner.result() }
    } finally {
      await handle.close()
    }
  }
  // One job at a time: they share the read buffer, and the disk is the limit anyway.
  let queue: Promise<unknown> = Promise.resolve()
  parentPort?.on('message', (job: { id: number, path: string, gzip: boolean, md5: boolean, lines?: boolean }) => {
    queue = queue.then(async () => await run(job)).then(
      (digest) => parentPort.postMessage({ id: job.id, digest }),
      (err: Error & { code?: string }) => parentPort.postMessage({ id: job.id, error: err.message, code: err.code }))
  })
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
  /** Files digested at once, each in its own thread (1 by default). */
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
 */
export class FileDigester {
  readonly #size: number
  readonly #lowPriority: boolean
  readonly #slots: Slot[] = []
  readonly #queue: Job[] = []
  #nextId = 1
  #closed = false

  constructor (options: FileDigesterOptions = {}) {
    this.#size = Math.max(1, options.workers ?? 1)
    this.#lowPriority = options.lowPriority ?? true
  }

  async digest (request: DigestRequest): Promise<FileDigest> {
    if (this.#closed) throw new Error('the file digester is closed')
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
    const worker = new Worker(`(${workerMain.toString()})()`, { eval: true, workerData: { lowPriority: this.#lowPriority } })
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
