import { writevSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'

/** A write into the page cache slower than this is taken as a slow disk (or a network filesystem). */
const SLOW_WRITE_MS = 20
/** How long writes stay asynchronous after a slow one. */
const ASYNC_AFTER_SLOW_MS = 60_000

/** Where an appender reports a slow write. */
export interface SlowWriteLogger {
  warn(details: object, message: string): void
}

/**
 * Appends whole buffers. A write into the page cache takes microseconds, less than the thread pool
 * round trip of an asynchronous one, so it is made synchronously; once one is slow (a disk under
 * pressure, a network filesystem), writes go through the thread pool for a while so that a slow
 * disk never stalls the event loop for long.
 */
export class Appender {
  #asyncUntil = 0
  readonly #logger: SlowWriteLogger
  readonly #what: string
  readonly #now: () => number

  /** `what` names the files written, for the log. */
  constructor (logger: SlowWriteLogger, what: string, now: () => number = () => performance.now()) {
    this.#logger = logger
    this.#what = what
    this.#now = now
  }

  async write (handle: FileHandle, data: Buffer[]): Promise<number> {
    let total = 0
    for (const b of data) total += b.length
    let bytesWritten: number
    const started = this.#now()
    if (started >= this.#asyncUntil) {
      bytesWritten = writevSync(handle.fd, data)
      const ms = this.#now() - started
      if (ms > SLOW_WRITE_MS) {
        this.#asyncUntil = started + ms + ASYNC_AFTER_SLOW_MS
        this.#logger.warn({ ms: Math.round(ms) }, `a write to ${this.#what} took ${Math.round(ms)} ms: writing through the thread pool for the next ${ASYNC_AFTER_SLOW_MS / 1000} s`)
      }
    } else {
      bytesWritten = (await handle.writev(data)).bytesWritten
    }
    while (bytesWritten < total) {
      // A short write: rare, but the rest must follow in order.
      const rest = Buffer.concat(data).subarray(bytesWritten)
      bytesWritten += (await handle.write(rest)).bytesWritten
    }
    return total
  }
}
