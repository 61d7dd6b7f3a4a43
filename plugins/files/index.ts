import { join } from 'node:path'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import type { Connection } from '../../core/connection.js'
import type { Destination, DestinationCheckContext, DestinationContext, RoutedEvent } from '../../core/destination.js'
import { EVS_ERR_CONNECTION_CAPABILITY, EVS_ERR_RECOVERY } from '../../core/errors.js'
import { ZonedTime, type TimeParts } from '../../core/time.js'
import type { SettingsProblem } from '../../core/validation.js'
import { Journal } from './journal.js'
import { checkLayout, compileLayout, type Layout } from './layout.js'
import { PartitionWriter } from './partition-writer.js'
import { repairFile } from './recovery.js'

const literals = <T extends string>(values: readonly T[], defaultValue: T) =>
  Type.Union(values.map((v) => Type.Literal(v)), { default: defaultValue })

export const FilesDestinationSchema = Type.Object({
  connection: Type.String({ minLength: 1, description: 'name of a connection in "connections"' }),
  path: Type.String({ default: '', description: 'folder within the connection' }),
  folderByTopic: Type.Boolean({ default: true }),
  folderByRoutingKey: Type.Boolean({ default: true }),
  partitioningPeriod: literals(['MONTH', 'DAY', 'HOUR'] as const, 'HOUR'),
  pathFormat: Type.Optional(Type.String({ minLength: 1, description: 'overrides the folder layout; tokens %{topic} %{routingKey} %Y %M %D %H' })),
  flushEveryBytes: Type.Integer({ default: 100 * 1024 * 1024, minimum: 0 }),
  flushEveryS: Type.Number({ default: 0, minimum: 0 }),
  compression: literals(['none', 'gzip'] as const, 'none'),
  durability: literals(['fsync', 'write'] as const, 'fsync'),
  maxOpenFiles: Type.Integer({ default: 256, minimum: 1 })
}, { additionalProperties: false })

export type FilesDestinationOptions = Static<typeof FilesDestinationSchema>

const MAINTENANCE_INTERVAL_MS = 1000
const FOLDER_CACHE_LIMIT = 10_000

/**
 * Writes routed events as JSON lines into `<path>/<topic>/<routing-key>/<period>/` files of a
 * connection. On a connection that can append (the filesystem) the files written are the output.
 */
export class FilesDestination implements Destination {
  readonly name: string
  readonly #options: FilesDestinationOptions
  readonly #context: DestinationContext
  readonly #layout: Layout
  readonly #time: ZonedTime
  #connection: Connection | undefined
  #writer: PartitionWriter | undefined
  #journal: Journal | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false
  // Folder per topic and routing key for the current period: encoding is done once, not per event.
  #folderPeriod = ''
  #folders = new Map<string, string>()

  constructor (options: FilesDestinationOptions, context: DestinationContext) {
    this.name = context.name
    this.#options = options
    this.#context = context
    this.#layout = compileLayout(options)
    this.#time = new ZonedTime(context.timeZone)
  }

  async open (): Promise<void> {
    const connection = this.#context.connection(this.#options.connection)
    if (connection === undefined) throw new EVS_ERR_RECOVERY(this.name, `connection "${this.#options.connection}" is not defined`)
    const localPath = connection.localPath?.bind(connection)
    if (!connection.capabilities.append || localPath === undefined) {
      throw new EVS_ERR_CONNECTION_CAPABILITY(connection.name, 'appending to files')
    }
    this.#connection = connection
    const journal = await Journal.load(this.#context.stateDir)
    const logger = this.#context.logger
    for (const entry of journal.unsealed()) {
      try {
        const result = await repairFile(localPath(entry.key), this.#options.compression, join(this.#context.stateDir, 'torn'), logger)
        logger.info({ key: entry.key, result }, 'recovered a file left open by the previous run')
      } catch (err) {
        throw new EVS_ERR_RECOVERY(this.name, `${entry.key}: ${(err as Error).message}`)
      }
      await journal.sealed(entry.seq)
    }
    await journal.compact()
    const extension = this.#options.compression === 'gzip' ? '.jsonl.gz' : '.jsonl'
    const prefix = `${this.#context.instanceId}_${this.name}_`
    this.#writer = new PartitionWriter({
      localPath,
      fileName: (seq) => `${prefix}${String(seq).padStart(10, '0')}${extension}`,
      compression: this.#options.compression,
      durability: this.#options.durability,
      flushEveryBytes: this.#options.flushEveryBytes,
      flushEveryS: this.#options.flushEveryS,
      maxOpenFiles: this.#options.maxOpenFiles,
      journal,
      logger,
      now: this.#context.now
    })
    this.#journal = journal
    this.#timer = setInterval(() => this.#maintain(), MAINTENANCE_INTERVAL_MS).unref()
  }

  async accept (events: readonly RoutedEvent[]): Promise<void> {
    const writer = this.#writer
    if (writer === undefined || this.#closed) throw new Error(`destination ${this.name} is not open`)
    let lastAt = Number.NaN
    let parts: TimeParts | undefined
    let period = ''
    const byFolder = new Map<string, Buffer[]>()
    for (const event of events) {
      if (event.receivedAt !== lastAt) {
        lastAt = event.receivedAt
        parts = this.#time.parts(lastAt)
        period = this.#layout.period(parts)
      }
      const folder = this.#folder(event.topic, event.routingKey, parts as TimeParts, period)
      const lines = byFolder.get(folder)
      if (lines === undefined) byFolder.set(folder, [event.line])
      else lines.push(event.line)
    }
    const writes: Array<Promise<void>> = []
    for (const [folder, lines] of byFolder) writes.push(writer.append(folder, period, lines))
    await (writes.length === 1 ? writes[0] : Promise.all(writes))
  }

  #folder (topic: string, routingKey: string, parts: TimeParts, period: string): string {
    if (period !== this.#folderPeriod || this.#folders.size > FOLDER_CACHE_LIMIT) {
      this.#folderPeriod = period
      this.#folders = new Map()
    }
    const cacheKey = `${topic}\u0000${routingKey}`
    let folder = this.#folders.get(cacheKey)
    if (folder === undefined) {
      folder = this.#layout.folder(topic, routingKey, parts)
      this.#folders.set(cacheKey, folder)
    }
    return folder
  }

  #maintain (): void {
    const period = this.#layout.period(this.#time.parts(this.#context.now()))
    this.#writer?.sealExpired(() => period)
  }

  async flush (): Promise<void> {
    await this.#writer?.flush()
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    await this.#writer?.flush()
    await this.#journal?.close()
  }

  stats (): Record<string, unknown> {
    return { ...this.#writer?.stats, connection: this.#connection?.name }
  }
}

function checkFilesDestination (options: FilesDestinationOptions, context: DestinationCheckContext): SettingsProblem[] {
  const problems = checkLayout(options)
  if (!context.connections.has(options.connection)) {
    const names = [...context.connections.keys()].map((n) => JSON.stringify(n)).join(', ')
    problems.push({ path: '/connection', message: `expected the name of a connection defined in "connections" (${names === '' ? 'none is defined' : names}), got ${JSON.stringify(options.connection)}` })
  }
  return problems
}

async function filesDestination (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerDestinationType({
    type: 'files',
    schema: FilesDestinationSchema,
    check: checkFilesDestination,
    create: (options: FilesDestinationOptions, context) => new FilesDestination(options, context)
  })
}

export default fp(filesDestination, {
  fastify: '5.x',
  name: 'dss-event-server-files',
  dependencies: ['dss-event-server-types']
})
