import type { FastifyBaseLogger } from 'fastify'

const PER_SECOND = 10
const BURST = 50

/**
 * One log line per request of a kind (rejected, unmatched), at most PER_SECOND a second on average (bursts of BURST):
 * a flood of bad requests cannot fill the disk. The next line written says how many were left out.
 */
export class RejectionLog {
  readonly #logger: FastifyBaseLogger
  readonly #now: () => number
  readonly #level: 'info' | 'warn'
  readonly #prefix: string
  #tokens = BURST
  #last: number
  #suppressed = 0

  constructor (logger: FastifyBaseLogger, now: () => number, level: 'info' | 'warn', prefix: string) {
    this.#logger = logger
    this.#now = now
    this.#level = level
    this.#prefix = prefix
    this.#last = now()
  }

  log (fields: Record<string, unknown>, message: string): void {
    const now = this.#now()
    this.#tokens = Math.min(BURST, this.#tokens + ((now - this.#last) / 1000) * PER_SECOND)
    this.#last = now
    if (this.#tokens < 1) {
      this.#suppressed++
      return
    }
    this.#tokens--
    const suppressed = this.#suppressed
    this.#suppressed = 0
    this.#logger[this.#level](suppressed > 0 ? { ...fields, suppressedSinceLastLine: suppressed } : fields, `${this.#prefix}: ${message}`)
  }
}
