import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'

/**
 * The digest records of a files destination's integrity chain: their format, where they live, how
 * they are hashed, signed and checked. Shared by the server (which writes them) and `verify`
 * (which checks them); docs/integrity.md describes the same format for other tools.
 *
 * A digest object is UTF-8 text: the record, one line of JSON, then a newline; when the chain is
 * signed, a signature line and a newline follow. The record's hash is the SHA-256 of the bytes of
 * its line (without the newline); the next record holds it as `prevHash`. The signature is Ed25519
 * over the same bytes.
 */

export const DIGEST_FORMAT = 'dss-event-server-digest/1'
/** Folder (under the destination's `path`) that holds the digest objects. No topic or routing key folder can start with `.`. */
export const DIGEST_FOLDER = '.dss-integrity'

interface RecordBase {
  format: typeof DIGEST_FORMAT
  destination: string
  instanceId: string
  /** Position in this instance's chain, from 1, without gaps. */
  seq: number
  /** Hash of the previous record's line (hex SHA-256); null for the first. */
  prevHash: string | null
  /** When the record was made, ISO-8601 UTC. */
  at: string
}

/** One completed data file (or object) at its final place. */
export interface FileRecord extends RecordBase {
  type: 'file'
  /** Key of the data file, relative to the connection. */
  key: string
  /** Its sequence number (from its name). */
  fileSeq: number
  bytes: number
  /** Events it holds: lines of a JSON-lines file (decompressed), rows of a Parquet file. */
  lines: number
  /** Hex SHA-256 of its bytes as stored (compressed, for `.jsonl.gz` and `.jsonl.zst`). */
  sha256: string
  /**
   * Reception times, ISO-8601 UTC: of its first and last line (JSON lines), the lowest and highest
   * `serverTimestamp` (Parquet); null when unreadable.
   */
  firstAt: string | null
  lastAt: string | null
}

export type HeadReason = 'start' | 'recovered' | 'interval' | 'stop'

/** A checkpoint of the chain: written at start, every `headIntervalS`, and at a clean stop. */
export interface HeadRecord extends RecordBase {
  type: 'head'
  reason: HeadReason
  /** File records in the chain so far, and their bytes. */
  files: number
  bytes: number
  /**
   * Lowest file sequence number that may not be recorded yet (files open, being completed or
   * waiting for upload, or started after this head). A file with a lower number and no record is
   * unexpected; null after a clean stop.
   */
  openFrom: number | null
  /** On the first record of a chain: data files of this instance with a lower number predate the chain. */
  coveredFrom?: number
  /**
   * After a crash: what the start found and repaired. `keys` (the first 100 of `files`): the files
   * the previous run left incomplete that this start completes, by their final keys: files left
   * open (repaired), and files left in the spool (converted to Parquet, placed or uploaded).
   * `stateLost`: the local state was missing and the chain continues after the last record found
   * in the store.
   */
  recovered?: { previousSeq: number, files: number, keys: string[], resentRecords: number, stateLost?: true }
}

export type DigestRecord = FileRecord | HeadRecord

export interface Signer {
  readonly keyId: string
  sign(data: Buffer): Buffer
}

export interface SignatureLine {
  alg: 'Ed25519'
  keyId: string
  sig: string
}

export interface ParsedDigest {
  record: DigestRecord
  /** The record line's bytes: what is hashed and signed. */
  line: Buffer
  /** Hex SHA-256 of `line`. */
  hash: string
  signature: SignatureLine | undefined
}

export function sha256Hex (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Key id of a public key: the first 16 hex digits of the SHA-256 of its SPKI (DER) encoding. */
export function keyIdOf (publicKey: KeyObject): string {
  return sha256Hex(publicKey.export({ type: 'spki', format: 'der' })).slice(0, 16)
}

/** Reads an Ed25519 private key (PEM); the message never contains the key. */
export function loadSigningKey (pem: string): { signer: Signer, publicKey: KeyObject } {
  let key: KeyObject
  try {
    key = createPrivateKey({ key: pem, format: 'pem' })
  } catch {
    throw new Error('expected an Ed25519 private key in PEM format ("-----BEGIN PRIVATE KEY-----"), which this is not')
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 private key, got a ${key.asymmetricKeyType ?? 'non-asymmetric'} key`)
  const publicKey = createPublicKey(key)
  const keyId = keyIdOf(publicKey)
  return { signer: { keyId, sign: (data) => sign(null, data, key) }, publicKey }
}

/** Reads an Ed25519 public key (PEM, SPKI), or derives it from a private key. */
export function loadPublicKey (pem: string): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey({ key: pem, format: 'pem' })
  } catch {
    throw new Error('expected an Ed25519 public key in PEM format ("-----BEGIN PUBLIC KEY-----")')
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 public key, got a ${key.asymmetricKeyType ?? 'non-asymmetric'} key`)
  return key
}

/** Key (relative to the connection) of the digest folder of one destination: `<path>/.dss-integrity/<destination>/`. */
export function digestPrefix (path: string, destination: string): string {
  const base = path.split('/').filter((s) => s !== '').join('/')
  return `${base === '' ? '' : `${base}/`}${DIGEST_FOLDER}/${destination}/`
}

/** `<prefix><instanceId>/<YYYY-MM-DD>/<seq, 12 digits>.json`: listable by instance and by day. */
export function digestKey (prefix: string, record: Pick<DigestRecord, 'instanceId' | 'seq' | 'at'>): string {
  return `${prefix}${record.instanceId}/${record.at.slice(0, 10)}/${String(record.seq).padStart(12, '0')}.json`
}

const DIGEST_KEY = /^([A-Za-z0-9.-]+)\/(\d{4}-\d{2}-\d{2})\/(\d{12})\.json$/

/** Parses the part of a digest key after the destination's digest prefix. */
export function parseDigestKey (rest: string): { instanceId: string, day: string, seq: number } | undefined {
  const match = DIGEST_KEY.exec(rest)
  if (match === null) return undefined
  return { instanceId: match[1] as string, day: match[2] as string, seq: Number(match[3]) }
}

const DATA_NAME = /^([A-Za-z0-9.-]+)_(.+)_(\d{10,})\.(?:jsonl(?:\.gz|\.zst)?|parquet)$/

/** `<instanceId>_<destination>_<seq>.jsonl[.gz|.zst]` or `.parquet`: instance ids hold no `_`, so the split is unambiguous. */
export function parseDataName (name: string): { instanceId: string, destination: string, fileSeq: number } | undefined {
  const match = DATA_NAME.exec(name)
  if (match === null) return undefined
  return { instanceId: match[1] as string, destination: match[2] as string, fileSeq: Number(match[3]) }
}

function signatureText (signature: SignatureLine): string {
  return JSON.stringify({ alg: signature.alg, keyId: signature.keyId, sig: signature.sig })
}

/** The digest object of a record: its line, and a signature line when there is a signer. */
export function encodeDigest (record: DigestRecord, signer: Signer | undefined): { bytes: Buffer, hash: string } {
  const line = Buffer.from(JSON.stringify(record))
  const hash = sha256Hex(line)
  if (signer === undefined) return { bytes: Buffer.concat([line, Buffer.from('\n')]), hash }
  const signature: SignatureLine = { alg: 'Ed25519', keyId: signer.keyId, sig: signer.sign(line).toString('base64') }
  return { bytes: Buffer.from(`${line.toString()}\n${signatureText(signature)}\n`), hash }
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const HEX64 = /^[0-9a-f]{64}$/
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

function checkRecord (value: unknown): DigestRecord {
  if (!isObject(value)) throw new Error('the record is not a JSON object')
  const r = value
  if (r.format !== DIGEST_FORMAT) throw new Error(`unknown record format ${JSON.stringify(r.format)}`)
  const need = (ok: boolean, field: string): void => { if (!ok) throw new Error(`the record's "${field}" is missing or malformed`) }
  need(typeof r.destination === 'string', 'destination')
  need(typeof r.instanceId === 'string', 'instanceId')
  need(Number.isSafeInteger(r.seq) && (r.seq as number) >= 1, 'seq')
  need(r.prevHash === null || (typeof r.prevHash === 'string' && HEX64.test(r.prevHash)), 'prevHash')
  need(typeof r.at === 'string' && ISO.test(r.at), 'at')
  if (r.type === 'file') {
    need(typeof r.key === 'string' && r.key !== '', 'key')
    need(Number.isSafeInteger(r.fileSeq), 'fileSeq')
    need(Number.isSafeInteger(r.bytes) && (r.bytes as number) >= 0, 'bytes')
    need(Number.isSafeInteger(r.lines) && (r.lines as number) >= 0, 'lines')
    need(typeof r.sha256 === 'string' && HEX64.test(r.sha256), 'sha256')
    need(r.firstAt === null || (typeof r.firstAt === 'string' && ISO.test(r.firstAt)), 'firstAt')
    need(r.lastAt === null || (typeof r.lastAt === 'string' && ISO.test(r.lastAt)), 'lastAt')
  } else if (r.type === 'head') {
    need(['start', 'recovered', 'interval', 'stop'].includes(r.reason as string), 'reason')
    need(Number.isSafeInteger(r.files), 'files')
    need(Number.isSafeInteger(r.bytes), 'bytes')
    need(r.openFrom === null || Number.isSafeInteger(r.openFrom), 'openFrom')
  } else {
    throw new Error(`unknown record type ${JSON.stringify(r.type)}`)
  }
  return r as unknown as DigestRecord
}

/**
 * Parses a digest object strictly: exactly one record line and at most one signature line, each
 * ending with a newline, the signature line in its one canonical spelling (so that no byte of the
 * object can change without the check noticing).
 */
export function parseDigest (bytes: Buffer): ParsedDigest {
  if (bytes.length === 0 || bytes[bytes.length - 1] !== 0x0a) throw new Error('the digest object does not end with a newline')
  const first = bytes.indexOf(0x0a)
  const line = bytes.subarray(0, first)
  let record: DigestRecord
  try {
    record = checkRecord(JSON.parse(line.toString('utf8')))
  } catch (err) {
    throw new Error(`unreadable record: ${(err as Error).message}`)
  }
  if (!Buffer.from(line.toString('utf8')).equals(line)) throw new Error('the record line is not valid UTF-8')
  let signature: SignatureLine | undefined
  if (first !== bytes.length - 1) {
    const rest = bytes.subarray(first + 1, bytes.length - 1)
    if (rest.includes(0x0a)) throw new Error('the digest object has more than two lines')
    const text = rest.toString('utf8')
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw new Error('unreadable signature line')
    }
    if (!isObject(parsed) || parsed.alg !== 'Ed25519' || typeof parsed.keyId !== 'string' || typeof parsed.sig !== 'string') {
      throw new Error('malformed signature line')
    }
    signature = { alg: 'Ed25519', keyId: parsed.keyId, sig: parsed.sig }
    if (signatureText(signature) !== text || !Buffer.from(text).equals(rest)) throw new Error('the signature line is not in its canonical form')
  }
  return { record, line, hash: sha256Hex(line), signature }
}

/** Checks a parsed digest's signature against public keys by key id; returns the problem, or undefined if it holds. */
export function checkSignature (digest: ParsedDigest, publicKeys: ReadonlyMap<string, KeyObject>): string | undefined {
  const { signature } = digest
  if (signature === undefined) return 'the record is not signed'
  const publicKey = publicKeys.get(signature.keyId)
  if (publicKey === undefined) return `signed with another key (key id ${signature.keyId}, expected ${[...publicKeys.keys()].join(' or ')})`
  const sig = Buffer.from(signature.sig, 'base64')
  // Base64 has spare bits: only the canonical spelling of the 64 signature bytes is accepted.
  if (sig.length !== 64 || sig.toString('base64') !== signature.sig) return 'the signature is malformed'
  return verify(null, digest.line, publicKey, sig) ? undefined : 'the signature does not match the record'
}
