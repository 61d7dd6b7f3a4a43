import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { KeyRing } from './auth.js'
import type { Connection } from './connection.js'
import type { Destination } from './destination.js'
import type { Metrics } from './metrics.js'
import { Router } from './router.js'
import type { Settings } from './schemas/settings.js'
import { ZonedTime } from './time.js'
import type { ResolvedDestination, ResolvedSettings } from './settings.js'

/** What a pipeline is built from: settings resolved down to every type's options (core/settings.ts). */
export type PipelineSpec = ResolvedSettings

export interface PipelineContext {
  instanceId: string
  logger: FastifyBaseLogger
  metrics: Metrics
  now: () => number
}

/**
 * Everything that one version of the settings builds: connections, destinations, router and keys.
 * A reload builds a new pipeline and swaps it in; requests count themselves in and out so the old
 * one is closed only once none is using it.
 */
export class Pipeline {
  readonly spec: PipelineSpec
  readonly settings: Settings
  readonly connections = new Map<string, Connection>()
  readonly destinations = new Map<string, Destination>()
  readonly eventKeys: KeyRing
  /** `security.authKeyHeader`, lower-cased as Node gives header names. */
  readonly keyHeader: string
  readonly time: ZonedTime
  router!: Router

  private constructor (spec: PipelineSpec) {
    this.spec = spec
    this.settings = spec.settings
    const { security, server } = spec.settings
    this.eventKeys = new KeyRing(security.eventsAuthenticationKeys.map((k) => k.key))
    this.keyHeader = security.authKeyHeader.toLowerCase()
    this.time = new ZonedTime(server.timeZone)
  }

  /** Creates connections and destinations and runs the destinations' crash recovery. */
  static async open (spec: PipelineSpec, context: PipelineContext): Promise<Pipeline> {
    const pipeline = new Pipeline(spec)
    try {
      await pipeline.#open(context)
    } catch (err) {
      await pipeline.close()
      throw err
    }
    return pipeline
  }

  async #open ({ instanceId, logger, metrics, now }: PipelineContext): Promise<void> {
    const { settings, baseDir } = this.spec
    for (const { name, definition, options } of this.spec.connections) {
      this.connections.set(name, definition.create(options, { name, baseDir, logger: logger.child({ connection: name }) }))
    }
    const stateRoot = resolve(baseDir, settings.server.stateDir)
    const routes: Array<{ settings: ResolvedDestination['settings'], destination: Destination }> = []
    for (const { settings: common, definition, options } of this.spec.destinations) {
      const stateDir = join(stateRoot, common.name)
      await mkdir(stateDir, { recursive: true })
      const destination = definition.create(options, {
        name: common.name,
        baseDir,
        stateDir,
        instanceId,
        timeZone: settings.server.timeZone,
        logger: logger.child({ destination: common.name }),
        now,
        connection: (name) => this.connections.get(name),
        metrics: metrics.forDestination(common.name)
      })
      this.destinations.set(common.name, destination)
      routes.push({ settings: common, destination })
    }
    await Promise.all([...this.destinations.values()].map(async (d) => await d.open()))
    this.router = new Router(routes, this.eventKeys)
  }

  /** Closes destinations (flushing them), then connections. Never throws: failures are logged. */
  async close (logger?: FastifyBaseLogger, reason: 'shutdown' | 'reload' = 'shutdown'): Promise<void> {
    const destinations = [...this.destinations]
    const results = await Promise.allSettled(destinations.map(async ([, d]) => await d.close({ reason })))
    results.forEach((r, i) => {
      if (r.status === 'rejected') logger?.error({ err: r.reason, destination: destinations[i]?.[0] }, 'destination did not close cleanly')
    })
    await Promise.allSettled([...this.connections.values()].map(async (c) => await c.close()))
  }
}
