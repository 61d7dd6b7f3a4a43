import { mkdir, unlink, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import {
  assertSafeKey, canAppend, EVS_ERR_DESTINATION_UNAVAILABLE, EVS_ERR_RECOVERY, EVS_ERR_SPOOL_FULL, Type, ZonedTime, type Connection, type Destination, type DestinationCheckContext,
  type DestinationContext, type DestinationStats, type RoutedEvent, type SettingsProblem, type Static, type TimeParts
} from '../../core/plugin-api.js'
import { Journal } from './journal.js'
import { CommitLog } from './commit-log.js'
import { checkLayout, compileLayout, type Layout } from './layout.js'
import { filesMetrics, type FilesMetrics } from './metrics.js'
import { PartitionWriter, type SealedFile } from './partition-writer.js'
import { readFilesDestination } from './reader.js'
import { recoverOpenFiles, spoolFiles } from './recovery.js'
import { Uploader } from './uploader.js'

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
  flushEveryS: Type.Optional(Type.Number({ minimum: 0, description: 'default: 0 on an appendable connection (filesystem), 300 on object stores' })),
  compression: literals(['none', 'gzip'] as const, 'none'),
  durability: literals(['fsync', 'write'] as const, 'fsync'),
  maxOpenFiles: Type.Integer({ default: 256, minimum: 1, description: 'file descriptors kept open' }),
  maxActiveFiles: Type.Integer({ default: 10000, minimum: 1, description: 'files being written at once' }),
  commitLog: Type.Boolean({ default: false, description: 'one sync per commit whatever the number of files touched' }),
  pipelinedCommits: Type.Integer({ default: 1, minimum: 1, maximum: 16, description: 'group commits whose fdatasync may overlap' }),
  spoolDir: Type.Optional(Type.String({ minLength: 1, description: 'object stores only; default <stateDir>/<destination>/spool' })),
  spoolMaxBytes: Type.Integer({ default: 1024 ** 3, minimum: 1 }),
  maxConcurrentUploads: Type.Integer({ default: 4, minimum: 1, maximum: 64 }),
  uploadRetryInitialS: Type.Number({ default: 1, exclusiveMinimum: 0 }),
  uploadRetryMaxS: Type.Number({ default: 300, exclusiveMinimum: 0 }),
  uploadShutdownGraceS: Type.Number({ default: 10, minimum: 0 }),
  healthCheckIntervalS: Type.Number({ default: 5, exclusiveMinimum: 0, description: 'how often /ready probes that the folder is writable' })
}, { additionalProperties: false })

export type FilesDestinationOptions = Static<typeof FilesDestinationSchema>

const MAINTENANCE_INTERVAL_MS = 1000
const OBJECT_STORE_FLUSH_EVERY_S = 300
const FOLDER_CACHE_LIMIT = 10_000

/**
 * Writes routed events as JSON lines into `<path>/<topic>/<routing-key>/<period>/` files of a
 * connection. On a connection that can append (the filesystem) the files written are the output;
 * on an object store they are written the same way into a local spool, and each sealed file is
 * uploaded as one object under the same key, then deleted from the spool.
 */
export class FilesDestination implements Destination {
  readonly name: string
  readonly #options: FilesDestinationOptions
  readonly #context: DestinationContext
  readonly #layout: Layout
  readonly #time: ZonedTime
  readonly #metrics: FilesMetrics
  #connection: Connection | undefined
  #writer: PartitionWriter | undefined
  #journal: Journal | undefined
  #log: CommitLog | undefined
  #uploader: Uploader | undefined
  #spoolDir: string | undefined
  #spoolBytes = 0
  #healthTimer: NodeJS.Timeout | undefined
  #unwritable: string | undefined
  #probePath: string | undefined
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
    this.#metrics = filesMetrics(context.metrics, {
      openFiles: () => this.#writer?.stats.openFiles,
      uploadRetries: () => this.#uploader?.stats.retries,
      quarantined: () => this.#uploader?.stats.quarantined
    })
  }

  async open (): Promise<void> {
    const options = this.#options
    const context = this.#context
    const connection = context.connection(options.connection)
    if (connection === undefined) throw new EVS_ERR_RECOVERY(this.name, `connection "${options.connection}" is not defined`)
    this.#connection = connection
    const appendable = canAppend(connection)
    const spoolDir = resolve(context.baseDir, options.spoolDir ?? join(context.stateDir, 'spool'))
    this.#spoolDir = spoolDir
    const localPath = appendable
      ? connection.localPath.bind(connection)
      : (key: string): string => {
          assertSafeKey(this.name, key)
          return join(spoolDir, ...key.split('/'))
        }
    const journal = this.#journal = await Journal.load(context.stateDir)
    const log = new CommitLog(join(context.stateDir, 'commit-log'), context.logger, context.now)
    await recoverOpenFiles({
      destination: this.name,
      journal,
      log,
      localPath,
      compression: options.compression,
      tornDir: join(context.stateDir, 'torn'),
      logger: context.logger,
      now: context.now
    })
    if (!appendable) this.#uploader = await this.#startUploader(connection, spoolDir)
    if (options.commitLog && options.durability === 'fsync') {
      await log.start()
      this.#log = log
    }
    this.#writer = this.#startWriter(journal, localPath, appendable)
    this.#timer = setInterval(() => this.#maintain(), MAINTENANCE_INTERVAL_MS).unref()
    // Readiness: a probe file where this destination writes first (its folder, or the spool).
    const probeName = `.dss-event-server-probe-${context.instanceId}_${this.name}`
    const folder = options.path.split('/').filter((s) => s !== '').join('/')
    this.#probePath = localPath(folder === '' ? probeName : `${folder}/${probeName}`)
    await this.#probe()
    this.#healthTimer = setInterval(() => { void this.#probe() }, options.healthCheckIntervalS * 1000).unref()
  }

  /** The uploader of an object store, with the files the previous run left in the spool queued again. */
  async #startUploader (connection: Connection, spoolDir: string): Promise<Uploader> {
    const options = this.#options
    const context = this.#context
    const uploader = new Uploader({
      connection,
      spoolDir,
      quarantineDir: join(dirname(spoolDir), `${basename(spoolDir)}-quarantine`),
      concurrency: options.maxConcurrentUploads,
      retryInitialMs: options.uploadRetryInitialS * 1000,
      retryMaxMs: options.uploadRetryMaxS * 1000,
      logger: context.logger,
      now: context.now,
      onRemoved: (bytes) => { this.#spoolBytes -= bytes },
      onAttempt: (seconds, outcome, err) => {
        this.#metrics.upload.observe(seconds, outcome)
        if (outcome === 'ok') this.#metrics.completed.add()
        else this.#metrics.error(err)
      }
    })
    // Every file left in the spool is sealed now: upload it again under its own key.
    const left = await spoolFiles(spoolDir)
    for (const file of left) {
      this.#spoolBytes += file.size
      uploader.enqueue(file)
    }
    if (left.length > 0) context.logger.info({ files: left.length, bytes: this.#spoolBytes }, 'uploading files left in the spool by the previous run')
    return uploader
  }

  #startWriter (journal: Journal, localPath: (key: string) => string, appendable: boolean): PartitionWriter {
    const options = this.#options
    const context = this.#context
    const extension = options.compression === 'gzip' ? '.jsonl.gz' : '.jsonl'
    const prefix = `${context.instanceId}_${this.name}_`
    const uploader = this.#uploader
    return new PartitionWriter({
      localPath,
      fileName: (seq) => `${prefix}${String(seq).padStart(10, '0')}${extension}`,
      compression: options.compression,
      durability: options.durability,
      flushEveryBytes: options.flushEveryBytes,
      flushEveryS: options.flushEveryS ?? (appendable ? 0 : OBJECT_STORE_FLUSH_EVERY_S),
      maxOpenFiles: options.maxOpenFiles,
      maxActiveFiles: options.maxActiveFiles,
      pipelinedCommits: options.pipelinedCommits,
      ...(this.#log !== undefined ? { commitLog: this.#log } : {}),
      journal,
      logger: context.logger,
      now: context.now,
      onWritten: (bytes) => { this.#spoolBytes += bytes },
      onSynced: (seconds) => { this.#metrics.commit.observe(seconds) },
      onError: (err) => {
        this.#metrics.error(err)
        this.#unwritable = (err as Error).message
      },
      onSealed: uploader !== undefined
        ? (file: SealedFile) => { uploader.enqueue({ key: file.key, path: file.path, size: file.size, since: file.openedAt }) }
        : () => { this.#metrics.completed.add() }
    })
  }

  /**
   * Appends every event to the file of its folder (topic, routing key and the period of its own
   * `receivedAt`), one write per folder. Settles once all are durable as `durability` says;
   * rejects with EVS_ERR_SPOOL_FULL, without writing anything, when the spool is full. When a
   * write fails the promise rejects, though other folders' lines of the batch may be durable: the
   * client's retry may then duplicate them, never lose them.
   */
  accept (events: readonly RoutedEvent[]): Promise<void> {
    const writer = this.#writer
    if (writer === undefined || this.#closed) return Promise.reject(new EVS_ERR_DESTINATION_UNAVAILABLE(this.name, 'it is not open'))
    if (this.#uploader !== undefined && this.#spoolBytes >= this.#options.spoolMaxBytes) {
      return Promise.reject(new EVS_ERR_SPOOL_FULL(this.name, this.#spoolBytes, this.#options.spoolMaxBytes))
    }
    let lastAt = Number.NaN
    let parts: TimeParts | undefined
    let period = ''
    // By period and folder: a pathFormat may leave out a period's coarser tokens (e.g. only %H).
    const groups = new Map<string, { folder: string, period: string, lines: Buffer[] }>()
    let lastTopic: string | undefined
    let lastRoutingKey: string | undefined
    let lines: Buffer[] = []
    for (const event of events) {
      if (event.receivedAt !== lastAt) {
        lastAt = event.receivedAt
        parts = this.#time.parts(lastAt)
        period = this.#layout.period(parts)
        lastTopic = undefined
      }
      if (event.topic !== lastTopic || event.routingKey !== lastRoutingKey) {
        lastTopic = event.topic
        lastRoutingKey = event.routingKey
        const folder = this.#folder(event.topic, event.routingKey, parts as TimeParts, period)
        const key = `${period}\u0000${folder}`
        const found = groups.get(key)
        if (found === undefined) groups.set(key, { folder, period, lines: lines = [] })
        else lines = found.lines
      }
      // Lines of one request are views into one buffer: neighbours merge into a single write vector.
      const previous = lines[lines.length - 1]
      const line = event.line
      if (previous !== undefined && previous.buffer === line.buffer && previous.byteOffset + previous.length === line.byteOffset) {
        lines[lines.length - 1] = Buffer.from(line.buffer, previous.byteOffset, previous.length + line.length)
      } else {
        lines.push(line)
      }
    }
    const writes: Array<Promise<void>> = []
    for (const group of groups.values()) writes.push(writer.append(group.folder, group.period, group.lines))
    return writes.length === 1 ? writes[0] as Promise<void> : Promise.all(writes).then(() => {})
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

  async #probe (): Promise<void> {
    const path = this.#probePath as string
    try {
      await mkdir(dirname(path), { recursive: true })
      await writeFile(path, 'probe\n')
      await unlink(path)
      this.#unwritable = undefined
    } catch (err) {
      if (this.#unwritable === undefined) this.#context.logger.error({ err }, 'the destination folder is not writable')
      this.#unwritable = `${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}`.trim()
    }
  }

  ready (): { ready: true } | { ready: false, reason: string } {
    if (this.#closed || this.#writer === undefined) return { ready: false, reason: 'not open' }
    if (this.#unwritable !== undefined) return { ready: false, reason: `cannot write: ${this.#unwritable}` }
    if (this.#uploader !== undefined && this.#spoolBytes >= this.#options.spoolMaxBytes) {
      return { ready: false, reason: `spool full: ${this.#spoolBytes} bytes waiting for upload (spoolMaxBytes ${this.#options.spoolMaxBytes})` }
    }
    return { ready: true }
  }

  #maintain (): void {
    this.#writer?.sealExpired(this.#layout.period(this.#time.parts(this.#context.now())))
  }

  async close (options?: { reason: 'shutdown' | 'reload' }): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    if (this.#healthTimer !== undefined) clearInterval(this.#healthTimer)
    await this.#writer?.flush()
    // On reload the next instance of this destination uploads what is left in the spool at once:
    // waiting here would hold every request for the grace period.
    const reload = options?.reason === 'reload'
    const left = await this.#uploader?.close(reload ? 0 : this.#options.uploadShutdownGraceS * 1000)
    if (left !== undefined && left.files > 0 && !reload) {
      // On a machine whose disk goes away with it, these events are lost unless someone copies them.
      this.#context.logger.warn({
        files: left.files,
        bytes: left.bytes,
        oldestEventAt: left.oldestSince === null ? null : new Date(left.oldestSince).toISOString(),
        oldestKey: left.oldestKey,
        spoolDir: this.#spoolDir
      }, `${left.files} file(s), ${left.bytes} bytes, not uploaded within uploadShutdownGraceS: they stay in the spool and are uploaded at the next start`)
    }
    // Every file is sealed, so synced: the commit log holds nothing more.
    await this.#log?.close()
    if (this.#journal?.unsealed().length === 0) await this.#log?.clear()
    await this.#journal?.close()
  }

  stats (): DestinationStats {
    const uploads = this.#uploader?.stats
    return {
      connection: this.#connection?.name,
      ...this.#writer?.stats,
      ...(uploads !== undefined
        ? {
            pendingBytes: this.#spoolBytes,
            oldestPendingAt: uploads.oldestPendingSince,
            uploadRetries: uploads.retries,
            quarantined: uploads.quarantined,
            spoolBytes: this.#spoolBytes,
            uploads: { ...uploads }
          }
        : {})
    }
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
    create: (options: FilesDestinationOptions, context) => new FilesDestination(options, context),
    read: (options: FilesDestinationOptions, context, query) => readFilesDestination(options, context, query)
  })
}

export default fp(filesDestination, {
  fastify: '5.x',
  name: 'dss-event-server-files',
  dependencies: ['dss-event-server-types']
})
