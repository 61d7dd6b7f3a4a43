import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { ConvertOptions, ConvertResult } from './parquet.js'
import type { ConvertRequest } from './parquet-worker.js'

/** Why a conversion failed; `permanent` when the input cannot be converted (retrying cannot help). */
export class ConversionError extends Error {
  readonly permanent: boolean
  readonly code: string | undefined
  /** The worker died or timed out: the input may be what kills it. */
  readonly crashed: boolean

  constructor (message: string, details: { permanent?: boolean, code?: string | undefined, crashed?: boolean } = {}) {
    super(message)
    this.name = 'ConversionError'
    this.permanent = details.permanent ?? false
    this.code = details.code
    this.crashed = details.crashed ?? false
  }
}

/** The built worker: beside this module, or, when running from the TypeScript sources (tests), in dist/. */
function workerFile (): URL {
  const beside = new URL('./parquet-worker.js', import.meta.url)
  if (existsSync(fileURLToPath(beside))) return beside
  return new URL('../../dist/plugins/files/parquet-worker.js', import.meta.url)
}

export interface ConverterOptions {
  convert: ConvertOptions
  /** A conversion taking longer is abandoned (the worker is stopped) and counts as a crash. */
  timeoutMs: number
}

/**
 * Converts spool files to Parquet in a worker thread of its own, one file at a time: the CPU work
 * stays off the event loop that answers requests. The worker starts on first use, is restarted
 * after a crash or a timeout, and its heap is capped so that a runaway conversion ends the worker,
 * not the server.
 */
export class Converter {
  readonly #options: ConverterOptions
  #worker: Worker | undefined
  #nextId = 1
  #running: { id: number, resolve: (r: ConvertResult) => void, reject: (e: Error) => void, timer: NodeJS.Timeout } | undefined
  #closed = false

  constructor (options: ConverterOptions) {
    this.#options = options
  }

  convert (input: string, output: string): Promise<ConvertResult> {
    if (this.#closed) return Promise.reject(new ConversionError('the converter is closed'))
    if (this.#running !== undefined) return Promise.reject(new Error('one conversion at a time'))
    const worker = this.#start()
    const id = this.#nextId++
    return new Promise<ConvertResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(new ConversionError(`the conversion took longer than ${this.#options.timeoutMs / 1000} s; the worker was stopped`, { crashed: true }))
      }, this.#options.timeoutMs)
      timer.unref()
      this.#running = { id, resolve, reject, timer }
      const request: ConvertRequest = { id, input, output, options: this.#options.convert }
      worker.postMessage(request)
    })
  }

  #start (): Worker {
    if (this.#worker !== undefined) return this.#worker
    // Room for one row group's input several times over (its columns, pages, compressed copies).
    const heapMb = 256 + Math.ceil(8 * this.#options.convert.rowGroupBytes / (1 << 20))
    const worker = new Worker(workerFile(), { resourceLimits: { maxOldGenerationSizeMb: heapMb } })
    worker.unref()
    worker.on('message', (message: { id: number, result?: ConvertResult, error?: { message: string, code?: string, permanent: boolean } }) => {
      const running = this.#running
      if (running === undefined || running.id !== message.id) return
      clearTimeout(running.timer)
      this.#running = undefined
      if (message.error !== undefined) running.reject(new ConversionError(message.error.message, message.error))
      else running.resolve(message.result as ConvertResult)
    })
    // A worker stopped on purpose was already replaced: only the current one's end is news.
    worker.on('error', (err) => {
      if (this.#worker === worker) this.#fail(new ConversionError(`the conversion worker failed: ${err.message}`, { crashed: true, code: (err as NodeJS.ErrnoException).code }))
    })
    worker.on('exit', (code) => {
      if (this.#worker === worker) this.#fail(new ConversionError(`the conversion worker exited with code ${code}`, { crashed: true }))
    })
    this.#worker = worker
    return worker
  }

  /** Ends the conversion under way with `err` and stops the worker (the next conversion starts a new one). */
  #fail (err: ConversionError): void {
    const running = this.#running
    this.#running = undefined
    const worker = this.#worker
    this.#worker = undefined
    if (running !== undefined) {
      clearTimeout(running.timer)
      running.reject(err)
    }
    void worker?.terminate()
  }

  /** Stops the worker at once; a conversion under way is rejected (its output is a temporary file). */
  async close (): Promise<void> {
    this.#closed = true
    const worker = this.#worker
    this.#fail(new ConversionError('the converter is closing'))
    await worker?.terminate()
  }
}
