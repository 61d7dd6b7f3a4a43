import { mkdir, open as openFile, readdir, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, relative, resolve, sep } from 'node:path'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import type { Connection } from '../../core/connection.js'
import type { Destination, DestinationCheckContext, DestinationContext, DestinationStats, RoutedEvent } from '../../core/destination.js'
import { EVS_ERR_RECOVERY, EVS_ERR_SPOOL_FULL } from '../../core/errors.js'
import { assertSafeKey } from '../../core/path-encoding.js'
import { ZonedTime, type TimeParts } from '../../core/time.js'
import type { SettingsProblem } from '../../core/validation.js'
import { Journal } from './journal.js'
import { CommitLog } from './commit-log.js'
import { checkLayout, compileLayout, type Layout } from './layout.js'
import { PartitionWriter, type SealedFile } from './partition-writer.js'
import { readFilesDestination } from './reader.js'
import { repairFile } from './recovery.js'
import { Uploader, type SpoolFile } from './uploader.js'

async function startLog (log: CommitLog): Promise<CommitLog> {
  await log.start()
  return log
}

/**
 * Writes every logged record of a still-open file back at its offset, syncs those files and cuts
 * them at the end of their last record. Records of sealed files are skipped: those files were
 * synced (and, for object stores, may be uploaded and gone).
 */
async function replayCommitLog (log: CommitLog, open: ReadonlySet<string>, localPath: (key: string) => string): Promise<{ records: number, files: number, torn: boolean }> {
  const writes = new Map<string, Array<{ offset: number, data: Buffer }>>()
  const { torn } = await log.replay(async (key, offset, data) => {
    if (!open.has(key)) return
    let list = writes.get(key)
    if (list === undefined) writes.set(key, list = [])
    list.push({ offset, data })
  })
  let records = 0
  for (const [key, list] of writes) {
    const path = localPath(key)
    await mkdir(dirname(path), { recursive: true })
    const handle = await open_(path)
    try {
      let end = 0
      for (const { offset, data } of list) {
        await handle.write(data, 0, data.length, offset)
        end = Math.max(end, offset + data.length)
        records++
      }
      await handle.truncate(end)
      await handle.sync()
    } finally {
      await handle.close()
    }
  }
  return { records, files: writes.size, torn }
}

async function open_ (path: string): Promise<FileHandle> {
  try {
    return await openFile(path, 'r+')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    return await openFile(path, 'w')
  }
}

/** Files in the spool, as keys relative to it; folders emptied by uploads are not files. */
async function spoolFiles (spoolDir: string): Promise<SpoolFile[]> {
  let entries
  try {
    entries = await readdir(spoolDir, { recursive: true, withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const files: SpoolFile[] = []
  for (const entry of entries) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    const info = await stat(path)
    files.push({ key: relative(spoolDir, path).split(sep).join('/'), path, size: info.size, since: info.mtimeMs })
  }
  return files.sort((a, b) => a.since - b.since)
}

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
  #connection: Connection | undefined
  #writer: PartitionWriter | undefined
  #journal: Journal | undefined
  #log: CommitLog | undefined
  #uploader: Uploader | undefined
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
  }

  async open (): Promise<void> {
    const options = this.#options
    const context = this.#context
    const connection = context.connection(options.connection)
    if (connection === undefined) throw new EVS_ERR_RECOVERY(this.name, `connection "${options.connection}" is not defined`)
    this.#connection = connection
    const appendable = connection.capabilities.append && connection.localPath !== undefined
    const spoolDir = resolve(context.baseDir, options.spoolDir ?? join(context.stateDir, 'spool'))
    const localPath = appendable
      ? (connection.localPath as (key: string) => string).bind(connection)
      : (key: string): string => {
          assertSafeKey(this.name, key)
          return join(spoolDir, ...key.split('/'))
        }
    const logger = context.logger
    const journal = await Journal.load(context.stateDir)
    this.#journal = journal
    // Replayed whatever the setting now says: a log left by the previous run holds acknowledged events.
    const log = new CommitLog(join(context.stateDir, 'commit-log'), logger)
    try {
      const replayed = await replayCommitLog(log, new Set(journal.unsealed().map((e) => e.key)), localPath)
      if (replayed.records > 0) logger.info(replayed, 'replayed the commit log into the files left open by the previous run')
      if (replayed.torn) logger.warn('the commit log ended with a torn record (never acknowledged); it was ignored')
    } catch (err) {
      throw new EVS_ERR_RECOVERY(this.name, `commit log: ${(err as Error).message}`)
    }
    await log.clear()
    for (const entry of journal.unsealed()) {
      try {
        const result = await repairFile(localPath(entry.key), options.compression, join(context.stateDir, 'torn'), logger)
        logger.info({ key: entry.key, result }, 'recovered a file left open by the previous run')
      } catch (err) {
        throw new EVS_ERR_RECOVERY(this.name, `${entry.key}: ${(err as Error).message}`)
      }
      await journal.sealed(entry.seq)
    }
    await journal.compact()

    if (!appendable) {
      const uploader = new Uploader({
        connection,
        spoolDir,
        quarantineDir: join(dirname(spoolDir), `${basename(spoolDir)}-quarantine`),
        concurrency: options.maxConcurrentUploads,
        retryInitialMs: options.uploadRetryInitialS * 1000,
        retryMaxMs: options.uploadRetryMaxS * 1000,
        logger,
        now: context.now,
        onRemoved: (bytes) => { this.#spoolBytes -= bytes },
        onAttempt: (seconds, outcome, err) => {
          context.metrics.uploaded(seconds, outcome)
          if (outcome === 'ok') context.metrics.completed()
          else context.metrics.error(err)
        }
      })
      this.#uploader = uploader
      // Every file left in the spool is sealed now: upload it again under its own key.
      const left = await spoolFiles(spoolDir)
      for (const file of left) {
        this.#spoolBytes += file.size
        uploader.enqueue(file)
      }
      if (left.length > 0) logger.info({ files: left.length, bytes: this.#spoolBytes }, 'uploading files left in the spool by the previous run')
    }

    const extension = options.compression === 'gzip' ? '.jsonl.gz' : '.jsonl'
    const prefix = `${context.instanceId}_${this.name}_`
    const uploader = this.#uploader
    this.#writer = new PartitionWriter({
      localPath,
      fileName: (seq) => `${prefix}${String(seq).padStart(10, '0')}${extension}`,
      compression: options.compression,
      durability: options.durability,
      flushEveryBytes: options.flushEveryBytes,
      flushEveryS: options.flushEveryS ?? (appendable ? 0 : OBJECT_STORE_FLUSH_EVERY_S),
      maxOpenFiles: options.maxOpenFiles,
      maxActiveFiles: options.maxActiveFiles,
      pipelinedCommits: options.pipelinedCommits,
      ...(options.commitLog && options.durability === 'fsync' ? { commitLog: this.#log = await startLog(log) } : {}),
      journal,
      logger,
      now: context.now,
      onWritten: (bytes) => { this.#spoolBytes += bytes },
      onSynced: (seconds) => { context.metrics.synced(seconds) },
      onError: (err) => {
        context.metrics.error(err)
        this.#unwritable = (err as Error).message
      },
      onSealed: uploader !== undefined
        ? (file: SealedFile) => { uploader.enqueue({ key: file.key, path: file.path, size: file.size, since: file.openedAt }) }
        : () => { context.metrics.completed() }
    })
    this.#timer = setInterval(() => this.#maintain(), MAINTENANCE_INTERVAL_MS).unref()
    // Readiness: a probe file where this destination writes first (its folder, or the spool).
    const probeName = `.dss-event-server-probe-${context.instanceId}_${this.name}`
    const folder = options.path.split('/').filter((s) => s !== '').join('/')
    this.#probePath = localPath(folder === '' ? probeName : `${folder}/${probeName}`)
    await this.#probe()
    this.#healthTimer = setInterval(() => { void this.#probe() }, options.healthCheckIntervalS * 1000).unref()
  }

  accept (events: readonly RoutedEvent[]): Promise<void> {
    const writer = this.#writer
    if (writer === undefined || this.#closed) return Promise.reject(new Error(`destination ${this.name} is not open`))
    if (this.#uploader !== undefined && this.#spoolBytes >= this.#options.spoolMaxBytes) {
      return Promise.reject(new EVS_ERR_SPOOL_FULL(this.name, this.#spoolBytes, this.#options.spoolMaxBytes))
    }
    let lastAt = Number.NaN
    let parts: TimeParts | undefined
    let period = ''
    const byFolder = new Map<string, Buffer[]>()
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
        const found = byFolder.get(folder)
        if (found === undefined) byFolder.set(folder, lines = [])
        else lines = found
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
    for (const [folder, lines] of byFolder) writes.push(writer.append(folder, period, lines))
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

  async flush (): Promise<void> {
    await this.#writer?.flush()
    await this.#uploader?.drain()
  }

  async close (options?: { reason: 'shutdown' | 'reload' }): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    if (this.#healthTimer !== undefined) clearInterval(this.#healthTimer)
    await this.#writer?.flush()
    // On reload the next instance of this destination uploads what is left in the spool at once:
    // waiting here would hold every request for the grace period.
    await this.#uploader?.close(options?.reason === 'reload' ? 0 : this.#options.uploadShutdownGraceS * 1000)
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
