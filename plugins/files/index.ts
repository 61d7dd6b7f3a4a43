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
import { PartitionWriter, type Compression, type SealedFile } from './partition-writer.js'
import { PARQUET_SUFFIX, SPOOL_SUFFIX, spoolLineHead } from './parquet.js'
import { placeCopy, ParquetStage } from './parquet-stage.js'
import { pruneEmptyFolders } from '../fs-sync.js'
import { readFilesDestination } from './reader.js'
import { recoverOpenFiles, spoolFiles } from './recovery.js'
import { Uploader, type SpoolFile } from './uploader.js'
import { checkIntegrity, Integrity, IntegritySchema } from './integrity.js'
import { verifyFilesDestination } from './verify.js'
import { loadZstd } from './zstd.js'

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
  format: literals(['jsonl', 'parquet'] as const, 'jsonl'),
  compression: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('gzip'), Type.Literal('zstd'), Type.Literal('snappy')], { description: 'jsonl: none (default), gzip or zstd; parquet: zstd (default), snappy, gzip or none' })),
  zstdLevel: Type.Optional(Type.Integer({ minimum: 1, maximum: 19, description: 'jsonl: 3 (default); parquet: 1 (default: zstd runs about 1.4 times as fast as at 3, for under 1% more bytes)' })),
  rowGroupRows: Type.Integer({ default: 100_000, minimum: 1, description: 'parquet: most events in a row group' }),
  rowGroupBytes: Type.Integer({ default: 32 * 1024 * 1024, minimum: 65536, description: 'parquet: most bytes of spooled JSON lines in a row group; bounds the memory of a conversion' }),
  conversionTimeoutS: Type.Number({ default: 600, exclusiveMinimum: 0, description: 'parquet: a conversion taking longer is stopped and retried' }),
  durability: literals(['fsync', 'write'] as const, 'fsync'),
  maxOpenFiles: Type.Integer({ default: 256, minimum: 1, description: 'file descriptors kept open' }),
  maxActiveFiles: Type.Integer({ default: 10000, minimum: 1, description: 'files being written at once' }),
  commitLog: Type.Boolean({ default: false, description: 'one sync per commit whatever the number of files touched' }),
  pipelinedCommits: Type.Integer({ default: 1, minimum: 1, maximum: 16, description: 'group commits whose fdatasync may overlap' }),
  spoolDir: Type.Optional(Type.String({ minLength: 1, description: 'object stores and Parquet; default <stateDir>/<destination>/spool' })),
  spoolMaxBytes: Type.Integer({ default: 1024 ** 3, minimum: 1 }),
  maxConcurrentUploads: Type.Integer({ default: 4, minimum: 1, maximum: 64 }),
  uploadRetryInitialS: Type.Number({ default: 1, exclusiveMinimum: 0 }),
  uploadRetryMaxS: Type.Number({ default: 300, exclusiveMinimum: 0 }),
  uploadShutdownGraceS: Type.Number({ default: 10, minimum: 0 }),
  healthCheckIntervalS: Type.Number({ default: 5, exclusiveMinimum: 0, description: 'how often /ready probes that the folder is writable' }),
  integrity: Type.Optional(IntegritySchema)
}, { additionalProperties: false })

export type FilesDestinationOptions = Static<typeof FilesDestinationSchema>

/** The zstd level in force: the setting, or the format's default. */
function zstdLevelOf (options: FilesDestinationOptions): number {
  return options.zstdLevel ?? (options.format === 'parquet' ? 1 : 3)
}

/** The compression in force: the setting, or the format's default. */
function compressionOf (options: FilesDestinationOptions): NonNullable<FilesDestinationOptions['compression']> {
  return options.compression ?? (options.format === 'parquet' ? 'zstd' : 'none')
}

const MAINTENANCE_INTERVAL_MS = 1000
const OBJECT_STORE_FLUSH_EVERY_S = 300
const FOLDER_CACHE_LIMIT = 10_000

/**
 * Writes routed events as JSON lines into `<path>/<topic>/<routing-key>/<period>/` files of a
 * connection. On a connection that can append (the filesystem) the files written are the output;
 * on an object store they are written the same way into a local spool, and each sealed file is
 * uploaded as one object under the same key, then deleted from the spool. With `format: parquet`
 * events are spooled on every connection, each line headed with its topic and routing key, and a
 * sealed spool file goes through the Parquet stage (converted in a worker thread) before it is
 * placed in its folder or uploaded.
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
  #stage: ParquetStage | undefined
  #integrity: Integrity | undefined
  /** Events go to a local spool first (object stores, and Parquet on any connection). */
  #spooled = false
  #spoolDir: string | undefined
  #spoolBytes = 0
  #healthTimer: NodeJS.Timeout | undefined
  #unwritable: string | undefined
  #probePaths: string[] = []
  #timer: NodeJS.Timeout | undefined
  #closed = false
  // Folder per topic and routing key for the current period: encoding is done once, not per event.
  #folderPeriod = ''
  #folders = new Map<string, string>()
  /** Parquet: the start of spool lines, per topic and routing key. */
  #heads = new Map<string, Buffer>()

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
    const parquet = options.format === 'parquet'
    // Parquet files are made whole from a sealed spool file, on every connection.
    const spooled = this.#spooled = !appendable || parquet
    const spoolDir = resolve(context.baseDir, options.spoolDir ?? join(context.stateDir, 'spool'))
    this.#spoolDir = spoolDir
    const localPath = !spooled && appendable
      ? connection.localPath.bind(connection)
      : (key: string): string => {
          assertSafeKey(this.name, key)
          return join(spoolDir, ...key.split('/'))
        }
    const journal = this.#journal = await Journal.load(context.stateDir)
    // Opened before recovery, which records the files a crash left open.
    const integrity = options.integrity?.enabled === true
      ? this.#integrity = await Integrity.open(options.integrity, {
        destination: this.name,
        instanceId: context.instanceId,
        stateDir: context.stateDir,
        baseDir: context.baseDir,
        connection,
        path: options.path,
        logger: context.logger,
        now: context.now,
        lowestOpenSeq: () => journal.lowestLive(),
        retryInitialMs: options.uploadRetryInitialS * 1000,
        retryMaxMs: options.uploadRetryMaxS * 1000
      })
      : undefined
    // Files the previous run left incomplete that this start completes, by their final keys: the
    // `recovered` head of a chain after a crash lists them.
    const recovered = new Set<string>()
    const log = new CommitLog(join(context.stateDir, 'commit-log'), context.logger, context.now)
    await recoverOpenFiles({
      destination: this.name,
      journal,
      log,
      localPath,
      tornDir: join(context.stateDir, 'torn'),
      logger: context.logger,
      now: context.now,
      ...(integrity !== undefined
        ? {
            onRecovered: async (key: string) => {
              recovered.add(finalKey(key))
              // Spooled, the file is recorded once uploaded, like any other.
              if (!spooled) await integrity.completed({ key, path: localPath(key) }).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
            }
          }
        : {})
    })
    if (!appendable) this.#uploader = this.#startUploader(connection, spoolDir)
    const stage = this.#stage = this.#startStage(connection, spoolDir)
    for (const key of await this.#recoverSpool(spoolDir)) recovered.add(key)
    if (!parquet && compressionOf(options) === 'zstd') await loadZstd() // fail now, not on the first event
    if (options.commitLog && options.durability === 'fsync') {
      await log.start()
      this.#log = log
    }
    this.#writer = this.#startWriter(journal, localPath, appendable, stage)
    this.#timer = setInterval(() => this.#maintain(), MAINTENANCE_INTERVAL_MS).unref()
    // Readiness: a probe file where this destination writes first (its folder, or the spool).
    const probeName = `.dss-event-server-probe-${context.instanceId}_${this.name}`
    const folder = options.path.split('/').filter((s) => s !== '').join('/')
    const probeKey = folder === '' ? probeName : `${folder}/${probeName}`
    this.#probePaths = [localPath(probeKey)]
    // Parquet on the filesystem: the files are placed in the destination folder, which must be writable too.
    if (appendable && spooled) this.#probePaths.push(connection.localPath(probeKey))
    await this.#probe()
    this.#healthTimer = setInterval(() => { void this.#probe() }, options.healthCheckIntervalS * 1000).unref()
    await integrity?.start({ keys: [...recovered] })
  }

  /** The uploader of an object store. */
  #startUploader (connection: Connection, spoolDir: string): Uploader {
    const options = this.#options
    const context = this.#context
    const integrity = this.#integrity
    return new Uploader({
      connection,
      spoolDir,
      quarantineDir: quarantineDirOf(spoolDir),
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
      },
      ...(integrity !== undefined
        ? { prepare: async (file: SpoolFile) => await integrity.beforeUpload(file), confirmed: async (file: SpoolFile) => await integrity.uploaded(file) }
        : {})
    })
  }

  /**
   * The Parquet stage: converts sealed spool files, then places each Parquet file (queued for
   * upload, or moved into its folder on the filesystem). Built whatever the format now says: a
   * spool may hold Parquet files of a previous run.
   */
  #startStage (connection: Connection, spoolDir: string): ParquetStage {
    const options = this.#options
    const context = this.#context
    const uploader = this.#uploader
    const integrity = this.#integrity
    let place: (file: SpoolFile) => Promise<void> | void
    if (uploader !== undefined) {
      place = (file) => {
        integrity?.pending(file.key)
        uploader.enqueue(file)
      }
    } else {
      if (!canAppend(connection)) throw new EVS_ERR_RECOVERY(this.name, `connection "${connection.name}" can neither append nor upload`)
      const finalPath = connection.localPath.bind(connection)
      place = async (file) => {
        const target = finalPath(file.key)
        integrity?.pending(file.key)
        await placeCopy(file.path, target)
        // Recorded before the spool copy goes: a crash in between places it again at the next
        // start (the same file) and records it then. A failed record leaves it to be placed again.
        await integrity?.completed({ key: file.key, path: target })
        await unlink(file.path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
        this.#spoolBytes -= file.size
        this.#metrics.completed.add()
        await pruneEmptyFolders(dirname(file.path), spoolDir)
      }
    }
    return new ParquetStage({
      spoolDir,
      quarantineDir: quarantineDirOf(spoolDir),
      convert: { compression: options.format === 'parquet' ? compressionOf(options) : 'zstd', zstdLevel: zstdLevelOf(options), rowGroupRows: options.rowGroupRows, rowGroupBytes: options.rowGroupBytes },
      timeoutMs: options.conversionTimeoutS * 1000,
      retryInitialMs: options.uploadRetryInitialS * 1000,
      retryMaxMs: options.uploadRetryMaxS * 1000,
      logger: context.logger,
      place,
      onSpoolBytes: (delta) => { this.#spoolBytes += delta },
      onError: (err) => { this.#metrics.error(err) }
    })
  }

  /**
   * Every file left in the spool is sealed now: convert, place or upload it under its own key.
   * Returns the final keys of the files this completes.
   */
  async #recoverSpool (spoolDir: string): Promise<string[]> {
    const logger = this.#context.logger
    const left = await spoolFiles(spoolDir)
    const completing = new Set<string>()
    for (const file of left) {
      if (file.key.endsWith('.tmp')) continue // a conversion cut short: redone from its spool file
      if (file.key.endsWith(SPOOL_SUFFIX) || file.key.endsWith(PARQUET_SUFFIX) || this.#uploader !== undefined) completing.add(finalKey(file.key))
    }
    for (const file of left) this.#spoolBytes += file.size
    const others = await (this.#stage as ParquetStage).recover(left)
    const uploader = this.#uploader
    if (uploader !== undefined) {
      for (const file of others) {
        this.#integrity?.pending(file.key)
        uploader.enqueue(file)
      }
    } else if (others.length > 0) logger.warn({ files: others.map((f) => f.path) }, 'files in the spool that this destination does not place (it writes to a filesystem): left as they are')
    if (left.length > 0) logger.info({ files: left.length, bytes: this.#spoolBytes }, 'handling files left in the spool by the previous run')
    return [...completing]
  }

  #startWriter (journal: Journal, localPath: (key: string) => string, appendable: boolean, stage: ParquetStage): PartitionWriter {
    const options = this.#options
    const context = this.#context
    const parquet = options.format === 'parquet'
    const compression = compressionOf(options)
    const extension = parquet ? SPOOL_SUFFIX : compression === 'gzip' ? '.jsonl.gz' : compression === 'zstd' ? '.jsonl.zst' : '.jsonl'
    const prefix = `${context.instanceId}_${this.name}_`
    const uploader = this.#uploader
    const integrity = this.#integrity
    return new PartitionWriter({
      localPath,
      fileName: (seq) => `${prefix}${String(seq).padStart(10, '0')}${extension}`,
      // Spool lines of Parquet are written as they are; the settings check refuses snappy for JSON lines.
      compression: parquet ? 'none' : compression as Compression,
      zstdLevel: zstdLevelOf(options),
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
      onWritten: this.#spooled ? (bytes) => { this.#spoolBytes += bytes } : undefined,
      onSynced: (seconds) => { this.#metrics.commit.observe(seconds) },
      onError: (err) => {
        this.#metrics.error(err)
        this.#unwritable = (err as Error).message
      },
      onSealed: (file: SealedFile) => {
        const spoolFile = { key: file.key, path: file.path, size: file.size, since: file.openedAt }
        if (parquet) {
          // Not in the journal any more, not placed yet: heads count it as still open meanwhile.
          integrity?.pending(finalKey(file.key))
          stage.enqueue(spoolFile)
        } else if (uploader !== undefined) uploader.enqueue(spoolFile)
        else this.#metrics.completed.add()
      },
      // Where a JSON-lines file is complete: at its final place on the filesystem, in the spool
      // otherwise (recorded once uploaded). Parquet files are recorded where they are placed.
      ...(integrity !== undefined && !parquet
        ? { beforeSealed: !this.#spooled ? async (file: SealedFile) => await integrity.completed(file) : (file: SealedFile) => integrity.pending(file.key) }
        : {})
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
    if (this.#spooled && this.#spoolBytes >= this.#options.spoolMaxBytes) {
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
    const parquet = this.#options.format === 'parquet'
    let head: Buffer | undefined
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
        if (parquet) head = this.#head(event.topic, event.routingKey)
      }
      if (head !== undefined) {
        // The spool line carries topic and routing key, which the folder may not tell.
        lines.push(head, event.line.subarray(1))
        continue
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

  #head (topic: string, routingKey: string): Buffer {
    const cacheKey = `${topic}\u0000${routingKey}`
    let head = this.#heads.get(cacheKey)
    if (head === undefined) {
      if (this.#heads.size > FOLDER_CACHE_LIMIT) this.#heads.clear()
      head = spoolLineHead(topic, routingKey)
      this.#heads.set(cacheKey, head)
    }
    return head
  }

  async #probe (): Promise<void> {
    try {
      for (const path of this.#probePaths) {
        await mkdir(dirname(path), { recursive: true })
        await writeFile(path, 'probe\n')
        await unlink(path)
      }
      this.#unwritable = undefined
    } catch (err) {
      if (this.#unwritable === undefined) this.#context.logger.error({ err }, 'the destination folder is not writable')
      this.#unwritable = `${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}`.trim()
    }
  }

  ready (): { ready: true } | { ready: false, reason: string } {
    if (this.#closed || this.#writer === undefined) return { ready: false, reason: 'not open' }
    if (this.#unwritable !== undefined) return { ready: false, reason: `cannot write: ${this.#unwritable}` }
    if (this.#spooled && this.#spoolBytes >= this.#options.spoolMaxBytes) {
      return { ready: false, reason: `spool full: ${this.#spoolBytes} bytes waiting for conversion or upload (spoolMaxBytes ${this.#options.spoolMaxBytes})` }
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
    // On reload the next instance of this destination converts and uploads what is left in the
    // spool at once: waiting here would hold every request for the grace period.
    const reload = options?.reason === 'reload'
    const graceMs = reload ? 0 : this.#options.uploadShutdownGraceS * 1000
    const started = performance.now()
    // Conversions first, from the same grace: what they finish is queued for upload.
    await this.#stage?.close(graceMs)
    const unconverted = this.#stage?.stats.conversionsPending ?? 0
    if (unconverted > 0 && !reload) {
      this.#context.logger.warn({ files: unconverted, spoolDir: this.#spoolDir },
        `${unconverted} file(s) not converted to Parquet within uploadShutdownGraceS: they stay in the spool and are converted at the next start`)
    }
    const left = await this.#uploader?.close(Math.max(0, graceMs - (performance.now() - started)))
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
    // After the uploads: those that finished are recorded before the closing head. On reload the
    // next instance stores what is left, as it uploads what is left.
    await this.#integrity?.close(reload ? 0 : undefined)
    // Every file is sealed, so synced: the commit log holds nothing more.
    await this.#log?.close()
    if (this.#journal?.unsealed().length === 0) await this.#log?.clear()
    await this.#journal?.close()
  }

  stats (): DestinationStats {
    const uploads = this.#uploader?.stats
    return {
      connection: this.#connection?.name,
      filesCompleted: this.#metrics.completed.value,
      ...this.#writer?.stats,
      ...(this.#integrity !== undefined ? { integrity: this.#integrity.stats() } : {}),
      ...(this.#options.format === 'parquet' && this.#stage !== undefined ? { parquet: { ...this.#stage.stats } } : {}),
      ...(this.#spooled && uploads === undefined ? { pendingBytes: this.#spoolBytes, spoolBytes: this.#spoolBytes } : {}),
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
  const problems = [...checkLayout(options), ...checkIntegrity(options.integrity, options, context)]
  if (options.format !== 'parquet' && options.compression === 'snappy') {
    problems.push({ path: '/compression', message: 'expected "none", "gzip" or "zstd" with format "jsonl" ("snappy" is for format "parquet"), got "snappy"' })
  }
  if (!context.connections.has(options.connection)) {
    const names = [...context.connections.keys()].map((n) => JSON.stringify(n)).join(', ')
    problems.push({ path: '/connection', message: `expected the name of a connection defined in "connections" (${names === '' ? 'none is defined' : names}), got ${JSON.stringify(options.connection)}` })
  }
  return problems
}

/** The key a spool file ends up under: a Parquet spool file's is its Parquet file's. */
function finalKey (key: string): string {
  return key.endsWith(SPOOL_SUFFIX) ? key.slice(0, -'.jsonl'.length) : key
}

function quarantineDirOf (spoolDir: string): string {
  return join(dirname(spoolDir), `${basename(spoolDir)}-quarantine`)
}

async function filesDestination (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerDestinationType({
    type: 'files',
    schema: FilesDestinationSchema,
    check: checkFilesDestination,
    create: (options: FilesDestinationOptions, context) => new FilesDestination(options, context),
    verify: verifyFilesDestination,
    read: (options: FilesDestinationOptions, context, query) => readFilesDestination(options, context, query)
  })
}

export default fp(filesDestination, {
  fastify: '5.x',
  name: 'dss-event-server-files',
  dependencies: ['dss-event-server-types']
})
