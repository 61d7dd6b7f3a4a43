import { EVS_ERR_OVERLOADED } from './errors.js'

/** How long after refusing a request for memory the server still reports itself not ready. */
const REFUSAL_MEMORY_MS = 1000
/** Above this share of the limit, /ready says the server is about to refuse. */
const PRESSURE_SHARE = 0.9

/**
 * The bytes of request bodies (and the lines built from them) held in memory, against
 * `server.maxInFlightBytes`. Every byte taken is given back by whoever took it, on every path.
 */
export class MemoryBudget {
  #held = 0
  #refusedAt = Number.NEGATIVE_INFINITY
  readonly #now: () => number
  readonly #onChange: (held: number) => void

  constructor (now: () => number, onChange: (held: number) => void = () => {}) {
    this.#now = now
    this.#onChange = onChange
  }

  get held (): number {
    return this.#held
  }

  /**
   * Takes `bytes`, or throws EVS_ERR_OVERLOADED when they would go past `limit`. With nothing held,
   * one request is always let through, so a body larger than the limit alone is not refused forever.
   */
  take (bytes: number, limit: number): void {
    this.refuseUnlessFits(bytes, limit)
    this.#held += bytes
    this.#onChange(this.#held)
  }

  /** Throws EVS_ERR_OVERLOADED when `bytes` more could not be taken now; takes nothing. */
  refuseUnlessFits (bytes: number, limit: number): void {
    if (this.#held + bytes > limit && this.#held > 0) {
      this.#refusedAt = this.#now()
      throw new EVS_ERR_OVERLOADED(this.#held, limit)
    }
  }

  /** Takes `bytes` whatever the limit: for memory already allocated. */
  force (bytes: number): void {
    this.#held += bytes
    this.#onChange(this.#held)
  }

  give (bytes: number): void {
    this.#held -= bytes
    this.#onChange(this.#held)
  }

  /** Why the server should not be sent events now, or undefined. */
  pressure (limit: number): string | undefined {
    if (this.#now() - this.#refusedAt < REFUSAL_MEMORY_MS) return `refusing requests: ${this.#held} bytes of requests in memory (server.maxInFlightBytes: ${limit})`
    if (this.#held >= limit * PRESSURE_SHARE) return `near the memory limit: ${this.#held} bytes of requests in memory (server.maxInFlightBytes: ${limit})`
    return undefined
  }
}
