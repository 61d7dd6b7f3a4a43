import { readFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { Type, type Connection, type PutOptions, type SettingsProblem, type Static } from '../../core/plugin-api.js'
import { DigestChain } from './digest-chain.js'
import { DIGEST_FOLDER, digestPrefix, loadSigningKey, parseDataName, type HeadRecord, type Signer } from './digest-record.js'
import { contentOfKey, FileDigester, type FileDigest } from './file-digest.js'

export const IntegritySchema = Type.Object({
  enabled: Type.Boolean({ description: 'record a chained digest of every completed file' }),
  signingKey: Type.Optional(Type.String({
    minLength: 1,
    description: 'Ed25519 private key (PEM): a file path, relative to the settings file folder, or the PEM itself, e.g. "${EVS_SIGNING_KEY}"'
  })),
  headIntervalS: Type.Number({ default: 600, exclusiveMinimum: 0, description: 'seconds between two signed heads, written even without traffic' })
}, { additionalProperties: false })

export type IntegrityOptions = Static<typeof IntegritySchema>

/** The PEM text of a `signingKey` setting: the value itself when it is PEM, else the file it names. */
export function signingKeyText (value: string, baseDir: string): string {
  if (value.trimStart().startsWith('-----BEGIN')) return value
  const path = resolve(baseDir, value)
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new Error(`cannot read the signing key file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/** Settings checks of the `integrity` block: the key must load (its text is never echoed). */
export function checkIntegrity (options: IntegrityOptions | undefined, layout: { path: string, pathFormat?: string | undefined }, context: { baseDir: string, purpose: 'serve' | 'verify' }): SettingsProblem[] {
  if (options === undefined || !options.enabled) return []
  const problems: SettingsProblem[] = []
  if (options.signingKey !== undefined && context.purpose === 'serve') {
    try {
      loadSigningKey(signingKeyText(options.signingKey, context.baseDir))
    } catch (err) {
      problems.push({ path: '/integrity/signingKey', message: (err as Error).message })
    }
  }
  const segments = [...layout.path.split('/'), ...(layout.pathFormat?.split('/') ?? [])]
  if (segments.includes(DIGEST_FOLDER)) {
    problems.push({ path: layout.pathFormat?.split('/').includes(DIGEST_FOLDER) === true ? '/pathFormat' : '/path', message: `expected no "${DIGEST_FOLDER}" folder: it holds the digest records` })
  }
  return problems
}

export interface IntegrityContext {
  readonly destination: string
  readonly instanceId: string
  /** The destination's state folder: the chain's state goes in `<stateDir>/integrity`. */
  readonly stateDir: string
  readonly baseDir: string
  readonly connection: Connection
  /** The destination's folder within the connection. */
  readonly path: string
  readonly logger: FastifyBaseLogger
  now(): number
  /** Lowest sequence number of a file that may still be written to (open, reserved, or the next one). */
  lowestOpenSeq(): number
  retryInitialMs?: number
  retryMaxMs?: number
}

export interface CompletedFile {
  readonly key: string
  /** Local path of its bytes (the file itself, or its spool copy). */
  readonly path: string
}

const RECOVERED_KEYS_LISTED = 100
const CLOSE_GRACE_MS = 10_000

/**
 * The tamper-evident trail of one files destination: a digest record per completed file, chained
 * and signed, stored next to the data; periodic heads, also logged. The destination calls it where
 * a file becomes complete: on the filesystem when it is sealed, on an object store when the store
 * has confirmed the upload (and, before the upload, to get the checksums the store should check).
 */
export class Integrity {
  readonly #options: IntegrityOptions
  readonly #context: IntegrityContext
  readonly #chain: DigestChain
  readonly #signer: Signer | undefined
  readonly #digester = new FileDigester()
  /** Files completed or waiting for upload but not recorded yet, with their sequence numbers. */
  readonly #inFlight = new Map<string, number>()
  /** Digests computed before an upload, used to record it once the store has it. */
  readonly #digests = new Map<string, FileDigest>()
  readonly #wantMd5: boolean
  #timer: NodeJS.Timeout | undefined
  #heads: Promise<unknown> = Promise.resolve()
  #closed = false
  #started = false
  #lastHead: { seq: number, hash: string, at: string } | undefined

  private constructor (options: IntegrityOptions, context: IntegrityContext, chain: DigestChain, signer: Signer | undefined) {
    this.#options = options
    this.#context = context
    this.#chain = chain
    this.#signer = signer
    this.#wantMd5 = context.connection.capabilities.checksums?.includes('md5') === true
  }

  /** Loads the chain's state and stores what a previous run left unstored; call before recovering files. */
  static async open (options: IntegrityOptions, context: IntegrityContext): Promise<Integrity> {
    const signer = options.signingKey === undefined ? undefined : loadSigningKey(signingKeyText(options.signingKey, context.baseDir)).signer
    const chain = await DigestChain.open({
      dir: join(context.stateDir, 'integrity'),
      connection: context.connection,
      prefix: digestPrefix(context.path, context.destination),
      destination: context.destination,
      instanceId: context.instanceId,
      signer,
      logger: context.logger,
      now: context.now,
      ...(context.retryInitialMs !== undefined ? { retryInitialMs: context.retryInitialMs } : {}),
      ...(context.retryMaxMs !== undefined ? { retryMaxMs: context.retryMaxMs } : {})
    })
    return new Integrity(options, context, chain, signer)
  }

  #seqOf (key: string): number {
    return parseDataName(basename(key))?.fileSeq ?? 0
  }

  /** A file is complete at its final place (the filesystem): digest it and record it. */
  async completed (file: CompletedFile): Promise<void> {
    if (this.#chain.recorded(file.key)) {
      // Recorded before a crash cut the rest short (a Parquet file placed again was marked pending).
      this.#inFlight.delete(file.key)
      return
    }
    this.#inFlight.set(file.key, this.#seqOf(file.key))
    try {
      await this.#record(file.key, await this.#digest(file))
    } finally {
      this.#inFlight.delete(file.key)
    }
  }

  /**
   * A file sealed into the spool (or left there by the previous run), recorded once uploaded; or
   * a Parquet file about to be placed on the filesystem, recorded once there.
   */
  pending (key: string): void {
    this.#inFlight.set(key, this.#seqOf(key))
  }

  /** Before an upload: the checksums the store should check the object against. */
  async beforeUpload (file: CompletedFile): Promise<NonNullable<PutOptions['checksum']>> {
    this.#inFlight.set(file.key, this.#seqOf(file.key))
    let digest = this.#digests.get(file.key)
    if (digest === undefined) {
      digest = await this.#digest(file)
      this.#digests.set(file.key, digest)
    }
    return { sha256: digest.sha256, ...(digest.md5 !== undefined ? { md5: digest.md5 } : {}) }
  }

  /** The store confirmed the whole object: record it (before its spool copy is deleted). */
  async uploaded (file: CompletedFile): Promise<void> {
    const digest = this.#digests.get(file.key) ?? await this.#digest(file)
    if (!this.#chain.recorded(file.key)) await this.#record(file.key, digest)
    this.#digests.delete(file.key)
    this.#inFlight.delete(file.key)
  }

  async #digest (file: CompletedFile): Promise<FileDigest> {
    // By the file's own name: the spool may hold files written under earlier settings.
    return await this.#digester.digest({ path: file.path, content: contentOfKey(file.key) ?? 'jsonl', md5: this.#wantMd5 })
  }

  async #record (key: string, digest: FileDigest): Promise<void> {
    await this.#chain.appendFile({
      key,
      fileSeq: this.#seqOf(key),
      bytes: digest.bytes,
      lines: digest.lines,
      sha256: digest.sha256,
      firstAt: digest.firstAt,
      lastAt: digest.lastAt
    })
  }

  #openFrom (): number {
    let lowest = this.#context.lowestOpenSeq()
    for (const seq of this.#inFlight.values()) if (seq < lowest) lowest = seq
    return lowest
  }

  /**
   * Writes the first head of this run, then one every `headIntervalS`. After a crash (the chain
   * did not end with a clean stop) the head says so, with the files the start repaired.
   */
  async start (recovered: { keys: string[] }): Promise<void> {
    const tip = this.#chain.tip
    const clean = tip.last === null || (tip.last.type === 'head' && tip.last.reason === 'stop')
    const fields: Partial<HeadRecord> = tip.seq === 0 ? { coveredFrom: this.#context.lowestOpenSeq() } : {}
    if (!clean) {
      fields.recovered = {
        previousSeq: tip.seq,
        files: recovered.keys.length,
        keys: recovered.keys.slice(0, RECOVERED_KEYS_LISTED),
        resentRecords: this.#chain.resent,
        ...(this.#chain.resumedFromStore ? { stateLost: true as const } : {})
      }
    }
    await this.#head(clean ? 'start' : 'recovered', fields)
    this.#started = true
    this.#timer = setInterval(() => {
      this.#heads = this.#heads.then(async () => await this.#head('interval')).catch((err: unknown) => {
        this.#context.logger.error({ err }, 'writing an integrity head failed')
      })
    }, this.#options.headIntervalS * 1000).unref()
  }

  async #head (reason: HeadRecord['reason'], extra: Partial<HeadRecord> = {}): Promise<void> {
    if (this.#closed) return
    const tip = this.#chain.tip
    const { record, hash } = await this.#chain.appendHead({
      reason,
      files: tip.files,
      bytes: tip.bytes,
      openFrom: reason === 'stop' && this.#inFlight.size === 0 ? null : this.#openFrom(),
      ...extra
    })
    this.#lastHead = { seq: record.seq, hash, at: record.at }
    // Logged too, so that a copy of every head lives outside the store (a SIEM): `verify --heads`.
    this.#context.logger.info({
      integrityHead: { destination: record.destination, instanceId: record.instanceId, seq: record.seq, hash, at: record.at, reason, files: record.files, bytes: record.bytes }
    }, 'integrity head')
  }

  stats (): Record<string, unknown> {
    return {
      records: this.#chain.tip.seq,
      unstoredRecords: this.#chain.unstored,
      storeRetries: this.#chain.stats.storeRetries,
      signed: this.#signer !== undefined,
      lastHead: this.#lastHead ?? null
    }
  }

  /**
   * Writes the closing head (`stop`), stores what it can within `graceMs`, and stops; records not
   * stored yet stay in the state folder for the next start. A destination that failed to open
   * writes no closing head: its chain then says, at the next start, that it was not closed cleanly.
   */
  async close (graceMs = CLOSE_GRACE_MS): Promise<void> {
    if (this.#closed) return
    if (this.#timer !== undefined) clearInterval(this.#timer)
    await this.#heads
    try {
      if (this.#started) await this.#head('stop')
    } finally {
      this.#closed = true
      await this.#chain.close(graceMs)
      await this.#digester.close()
    }
  }
}
