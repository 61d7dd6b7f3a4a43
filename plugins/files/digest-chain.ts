import { mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { Connection } from '../../core/plugin-api.js'
import { fsyncDir } from '../fs-sync.js'
import {
  DIGEST_FORMAT, digestKey, encodeDigest, parseDigest, parseDigestKey,
  type DigestRecord, type FileRecord, type HeadRecord, type Signer
} from './digest-record.js'

/** Where the chain stands: its last record, and totals of the file records so far. */
export interface ChainTip {
  seq: number
  hash: string | null
  files: number
  bytes: number
  /** The last record's type and reason: a chain that ends with a `stop` head was closed cleanly. */
  last: { type: DigestRecord['type'], reason?: HeadRecord['reason'], at: string } | null
}

export interface DigestChainOptions {
  /** Folder of this chain's local state (in the destination's state folder). */
  dir: string
  connection: Connection
  /** Digest prefix of the destination (see digestPrefix). */
  prefix: string
  destination: string
  instanceId: string
  signer: Signer | undefined
  logger: FastifyBaseLogger
  now(): number
  retryInitialMs?: number
  retryMaxMs?: number
}

type LogLine =
  | { state: ChainTip }
  | { recent: string[] }
  | { record: string }
  | { stored: number }

type FileFields = Omit<FileRecord, 'format' | 'type' | 'destination' | 'instanceId' | 'seq' | 'prevHash' | 'at'>
type HeadFields = Omit<HeadRecord, 'format' | 'type' | 'destination' | 'instanceId' | 'seq' | 'prevHash' | 'at'>

const COMPACT_AFTER = 10_000
const RECENT_KEYS = 1000

interface Outgoing {
  seq: number
  key: string
  bytes: Buffer
  attempt: number
}

/**
 * One destination's chain of digest records for this instance. Each record is made durable in a
 * local log (`<dir>/chain.jsonl`) before anything else happens, then stored as a digest object on
 * the connection, retried with backoff until the store takes it. The log is the chain's memory: a
 * restart, a reload or a crash resumes from its last record and stores whatever was not stored yet.
 */
export class DigestChain {
  readonly #options: DigestChainOptions
  readonly #path: string
  #tip: ChainTip = { seq: 0, hash: null, files: 0, bytes: 0, last: null }
  readonly #recent: string[] = []
  readonly #recentSet = new Set<string>()
  /** Records not yet confirmed by the store, by sequence number. */
  readonly #unstored = new Map<number, Outgoing>()
  /** Records to store, in order: the store shows a prefix of the chain, never a later record before an earlier one. */
  readonly #queue: Outgoing[] = []
  #storing: Promise<void> | undefined
  #retryTimer: NodeJS.Timeout | undefined
  #wake: (() => void) | undefined
  #handle: FileHandle | undefined
  #lines = 0
  /** `stored` marks not yet written: they go out with the next record (losing them costs a repeated put). */
  #storedMarks: string[] = []
  /** Records are numbered, hashed and logged one after another; the log is only touched from this chain. */
  #appending: Promise<unknown> = Promise.resolve()
  #closed = false
  #idle: Array<() => void> = []
  /** Records found in the log but not stored when the chain was opened. */
  resent = 0
  /** The local state was missing: the chain continues after the last record found in the store. */
  resumedFromStore = false
  readonly stats = { records: 0, stored: 0, storeRetries: 0, lastError: null as string | null }

  private constructor (options: DigestChainOptions) {
    this.#options = options
    this.#path = join(options.dir, 'chain.jsonl')
  }

  static async open (options: DigestChainOptions): Promise<DigestChain> {
    const chain = new DigestChain(options)
    await mkdir(options.dir, { recursive: true })
    await chain.#load()
    if (chain.#tip.seq === 0) await chain.#resumeFromStore()
    await chain.#rewrite()
    chain.resent = chain.#unstored.size
    for (const outgoing of [...chain.#unstored.values()].sort((a, b) => a.seq - b.seq)) chain.#queue.push(outgoing)
    chain.#pump()
    return chain
  }

  get tip (): Readonly<ChainTip> {
    return this.#tip
  }

  /** Records not yet in the store. */
  get unstored (): number {
    return this.#unstored.size
  }

  /** Whether one of the last file records made concerns this key (a repeat after a crash is not recorded twice). */
  recorded (key: string): boolean {
    return this.#recentSet.has(key)
  }

  async #load (): Promise<void> {
    let text = ''
    try {
      text = await readFile(this.#path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    for (const line of text.split('\n')) {
      if (line === '') continue
      let entry: LogLine
      try {
        entry = JSON.parse(line) as LogLine
      } catch {
        continue // a torn last line: that record was never stored nor acted upon
      }
      if ('state' in entry) this.#tip = entry.state
      else if ('recent' in entry) for (const key of entry.recent) this.#remember(key)
      else if ('stored' in entry) this.#unstored.delete(entry.stored)
      else if ('record' in entry) {
        const bytes = Buffer.from(entry.record)
        const { record, hash } = parseDigest(bytes)
        // After a rewrite, the state line already counts the unstored records that follow it.
        if (record.seq > this.#tip.seq) this.#advance(record, hash)
        this.#unstored.set(record.seq, { seq: record.seq, key: digestKey(this.#options.prefix, record), bytes, attempt: 0 })
      }
    }
  }

  /**
   * No local state, but maybe a chain in the store (the state folder was lost or replaced):
   * continue after its last record rather than start again at 1 and overwrite it.
   */
  async #resumeFromStore (): Promise<void> {
    const { connection, prefix, instanceId, logger } = this.#options
    let last: { key: string, seq: number } | undefined
    for await (const { key } of connection.list(`${prefix}${instanceId}/`)) {
      const parsed = parseDigestKey(key.slice(prefix.length))
      if (parsed !== undefined && (last === undefined || parsed.seq > last.seq)) last = { key, seq: parsed.seq }
    }
    if (last === undefined) return
    const chunks: Buffer[] = []
    for await (const chunk of await connection.read(last.key)) chunks.push(chunk as Buffer)
    const { record, hash } = parseDigest(Buffer.concat(chunks))
    this.#tip = {
      seq: record.seq,
      hash,
      files: record.type === 'head' ? record.files : 0,
      bytes: record.type === 'head' ? record.bytes : 0,
      // Not a clean stop as far as this run knows: the next head says the chain was resumed.
      last: { type: record.type, at: record.at }
    }
    this.resumedFromStore = true
    logger.warn({ key: last.key, seq: record.seq }, 'no local integrity state: continuing the chain after its last record in the store')
  }

  #advance (record: DigestRecord, hash: string): void {
    this.#tip = {
      seq: record.seq,
      hash,
      files: this.#tip.files + (record.type === 'file' ? 1 : 0),
      bytes: this.#tip.bytes + (record.type === 'file' ? record.bytes : 0),
      last: record.type === 'head' ? { type: 'head', reason: record.reason, at: record.at } : { type: record.type, at: record.at }
    }
    if (record.type === 'file') this.#remember(record.key)
  }

  #remember (key: string): void {
    if (this.#recentSet.has(key)) return
    this.#recent.push(key)
    this.#recentSet.add(key)
    if (this.#recent.length > RECENT_KEYS) this.#recentSet.delete(this.#recent.shift() as string)
  }

  async appendFile (fields: FileFields): Promise<FileRecord> {
    return await this.#append('file', fields) as FileRecord
  }

  async appendHead (fields: HeadFields): Promise<{ record: HeadRecord, hash: string }> {
    let hash = ''
    const record = await this.#append('head', fields, (h) => { hash = h }) as HeadRecord
    return { record, hash }
  }

  async #append (type: DigestRecord['type'], fields: FileFields | HeadFields, onHash?: (hash: string) => void): Promise<DigestRecord> {
    if (this.#closed) throw new Error('the digest chain is closed')
    const step = this.#appending.then(async () => {
      const { destination, instanceId, signer, now, prefix } = this.#options
      // Field order is fixed here: other tools read the record, and the hash covers its exact bytes.
      const record = {
        format: DIGEST_FORMAT,
        type,
        destination,
        instanceId,
        seq: this.#tip.seq + 1,
        prevHash: this.#tip.hash,
        at: new Date(now()).toISOString(),
        ...fields
      } as DigestRecord
      const { bytes, hash } = encodeDigest(record, signer)
      // Durable locally before it counts: the next record is chained to it whatever happens next.
      await this.#write([...this.#storedMarks.splice(0), JSON.stringify({ record: bytes.toString() }) + '\n'])
      this.#advance(record, hash)
      this.stats.records++
      onHash?.(hash)
      const outgoing = { seq: record.seq, key: digestKey(prefix, record), bytes, attempt: 0 }
      this.#unstored.set(record.seq, outgoing)
      this.#queue.push(outgoing)
      this.#pump()
      if (this.#lines > COMPACT_AFTER) await this.#rewrite()
      return record
    })
    this.#appending = step.catch(() => {})
    return await step
  }

  #pump (): void {
    if (this.#storing !== undefined || this.#closed || this.#queue.length === 0) return
    this.#storing = this.#storeInOrder().finally(() => {
      this.#storing = undefined
      this.#notifyIdle()
      this.#pump()
    })
  }

  async #storeInOrder (): Promise<void> {
    const { retryInitialMs = 1000, retryMaxMs = 300_000 } = this.#options
    while (!this.#closed && this.#queue.length > 0) {
      const outgoing = this.#queue[0] as Outgoing
      if (await this.#store(outgoing)) {
        this.#queue.shift()
        continue
      }
      if (this.#closed) return
      const ceiling = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(outgoing.attempt, 30))
      await new Promise<void>((resolve) => {
        this.#wake = resolve
        this.#retryTimer = setTimeout(resolve, ceiling / 2 + Math.random() * ceiling / 2).unref()
      })
      outgoing.attempt++
    }
  }

  async #store (outgoing: Outgoing): Promise<boolean> {
    const { connection, logger } = this.#options
    try {
      await connection.put(outgoing.key, outgoing.bytes, { contentType: 'application/json', size: outgoing.bytes.length, checksum: {}, retain: true })
    } catch (err) {
      this.stats.storeRetries++
      this.stats.lastError = (err as Error).message
      logger.warn({ key: outgoing.key, attempt: outgoing.attempt + 1, err: { message: (err as Error).message, code: (err as { code?: string }).code } },
        'storing a digest record failed; it is kept in the state folder and retried')
      return false
    }
    this.#unstored.delete(outgoing.seq)
    this.stats.stored++
    this.#storedMarks.push(JSON.stringify({ stored: outgoing.seq }) + '\n')
    return true
  }

  #notifyIdle (): void {
    if (this.#storing !== undefined || (this.#unstored.size > 0 && !this.#closed)) return
    const waiters = this.#idle
    this.#idle = []
    for (const resolve of waiters) resolve()
  }

  /** Resolves once every record is in the store, or after `timeoutMs`; what is left is stored at the next start. */
  async flush (timeoutMs: number): Promise<void> {
    if (this.#unstored.size === 0 && this.#storing === undefined) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>((resolve) => this.#idle.push(resolve)),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
    ])
    clearTimeout(timer)
  }

  /** Stops storing (after `graceMs` for what is under way) and closes the log; nothing can be appended after. */
  async close (graceMs: number): Promise<void> {
    if (this.#closed) return
    await this.#appending
    await this.flush(graceMs)
    this.#closed = true
    clearTimeout(this.#retryTimer)
    this.#wake?.()
    // A put under way finishes or fails on its own (connections have their own timeouts).
    await this.#storing
    await this.#rewrite()
    await this.#handle?.close()
    this.#handle = undefined
  }

  async #write (lines: string[]): Promise<void> {
    this.#handle ??= await open(this.#path, 'a')
    await this.#handle.write(lines.join(''))
    await this.#handle.datasync()
    this.#lines += lines.length
  }

  /** Rewrites the log with only what is needed: the tip, recent keys and unstored records. */
  async #rewrite (): Promise<void> {
    await this.#handle?.close()
    this.#handle = undefined
    const lines: LogLine[] = [
      { state: this.#tip },
      { recent: this.#recent },
      ...[...this.#unstored.values()].sort((a, b) => a.seq - b.seq).map((o) => ({ record: o.bytes.toString() }))
    ]
    const temp = `${this.#path}.tmp`
    const handle = await open(temp, 'w')
    try {
      await handle.writeFile(lines.map((l) => JSON.stringify(l) + '\n').join(''))
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, this.#path)
    await fsyncDir(this.#options.dir)
    this.#lines = lines.length
  }
}
