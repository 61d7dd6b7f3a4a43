import type { FastifyBaseLogger } from 'fastify'
import type { Pipeline } from './pipeline.js'

/** Longest wait for the requests of the outgoing pipeline before it is closed anyway. */
const DRAIN_TIMEOUT_MS = 30_000

/**
 * The pipeline in force, and the one protocol for changing it under running requests: a request
 * counts itself in (`tryAcquire`/`acquire`) and out (`leave`); `swap` holds new requests at a gate,
 * waits until the outgoing pipeline has no request left (or the drain timeout), closes it and
 * opens the next one. No request is dropped, and none sees two pipelines.
 */
export class PipelineSwitch {
  #current: Pipeline
  #gate: Promise<void> | undefined
  /** Requests in flight per pipeline: the outgoing one keeps its count while it drains. */
  readonly #inFlight = new Map<Pipeline, number>()
  readonly #drained = new Map<Pipeline, () => void>()
  readonly #logger: FastifyBaseLogger

  constructor (initial: Pipeline, logger: FastifyBaseLogger) {
    this.#current = initial
    this.#logger = logger
  }

  get current (): Pipeline {
    return this.#current
  }

  /** Counts one request in on the current pipeline; undefined while a swap is under way. */
  tryAcquire (): Pipeline | undefined {
    if (this.#gate !== undefined) return undefined
    const pipeline = this.#current
    this.#inFlight.set(pipeline, (this.#inFlight.get(pipeline) ?? 0) + 1)
    return pipeline
  }

  /** Waits out a swap under way, then counts one request in on the current pipeline. */
  async acquire (): Promise<Pipeline> {
    for (;;) {
      const pipeline = this.tryAcquire()
      if (pipeline !== undefined) return pipeline
      await this.#gate
    }
  }

  /** Counts a request out of the pipeline it acquired. */
  leave (pipeline: Pipeline): void {
    const left = (this.#inFlight.get(pipeline) ?? 1) - 1
    if (left > 0) {
      this.#inFlight.set(pipeline, left)
      return
    }
    this.#inFlight.delete(pipeline)
    this.#drained.get(pipeline)?.()
  }

  async #drain (pipeline: Pipeline): Promise<boolean> {
    if (!this.#inFlight.has(pipeline)) return true
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        new Promise<boolean>((resolve) => this.#drained.set(pipeline, () => resolve(true))),
        new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), DRAIN_TIMEOUT_MS) })
      ])
    } finally {
      clearTimeout(timer)
      this.#drained.delete(pipeline)
    }
  }

  /**
   * Replaces the current pipeline by `open()`'s, once the current one has drained and closed.
   * When `open` fails, `reopen` builds the previous settings again and the error is rethrown.
   * `interrupt` runs once new requests wait: it ends those that would hold the drain up for long
   * (bodies still arriving from slow clients).
   */
  async swap (open: () => Promise<Pipeline>, reopen: () => Promise<Pipeline>, interrupt: () => void = () => {}): Promise<void> {
    let release = (): void => {}
    this.#gate = new Promise<void>((resolve) => { release = resolve })
    const old = this.#current
    try {
      interrupt()
      if (!await this.#drain(old)) this.#logger.warn(`reload: requests still running after ${DRAIN_TIMEOUT_MS / 1000} s; swapping anyway`)
      await old.close(this.#logger, 'reload')
      try {
        this.#current = await open()
      } catch (err) {
        this.#logger.error({ err }, 'reload: the new settings failed to open; going back to the previous ones')
        this.#current = await reopen()
        throw err
      }
    } finally {
      this.#gate = undefined
      release()
    }
  }
}
