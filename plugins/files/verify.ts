import { randomUUID, type KeyObject } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { once } from 'node:events'
import { availableParallelism, tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { canAppend, type Connection, type DestinationVerifyContext, type VerifyProblem, type VerifyReport, type VerifyRequest } from '../../core/plugin-api.js'
import {
  checkSignature, DIGEST_FOLDER, digestPrefix, keyIdOf, loadPublicKey, loadSigningKey, parseDataName, parseDigest, parseDigestKey,
  type FileRecord, type HeadRecord, type ParsedDigest
} from './digest-record.js'
import { contentOfKey, FileDigester, UNREADABLE_CONTENT } from './file-digest.js'
import { signingKeyText, type IntegrityOptions } from './integrity.js'

/** The options `verify` needs; a subset of the files destination's. */
export interface VerifiableOptions {
  connection: string
  path: string
  integrity?: IntegrityOptions | undefined
}

const PROBE_PREFIX = '.dss-event-server-probe-'
/** Slack on top of two head intervals before a chain that stopped writing heads is called cut. */
const TAIL_SLACK_MS = 60_000
const POOL_THRESHOLD_BYTES = 32 * 1024 * 1024

async function readAll (connection: Connection, key: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of await connection.read(key)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/**
 * SHA-256, size and events of a data object, counted in a worker thread as the server counted them:
 * a local file in place; an object of a store downloaded to a temporary file first (events are
 * read from the decompressed stream, or from a Parquet footer, which is at the end). `lines` is
 * undefined for a file whose name gives no format, or whose content cannot be read as it says.
 */
async function digestObject (connection: Connection, key: string, digester: FileDigester, scratch: () => Promise<string>, onBytes: (n: number) => void): Promise<{ sha256: string, bytes: number, lines: number | undefined, unreadable?: string }> {
  const content = contentOfKey(key)
  let path: string
  let temp: string | undefined
  if (canAppend(connection)) {
    path = connection.localPath(key)
  } else {
    path = temp = join(await scratch(), randomUUID())
    const out = createWriteStream(temp)
    try {
      for await (const chunk of await connection.read(key)) {
        onBytes((chunk as Buffer).length)
        if (!out.write(chunk)) await once(out, 'drain')
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => err == null ? resolve() : reject(err)))
    } catch (err) {
      out.destroy()
      await rm(temp, { force: true })
      throw err
    }
  }
  try {
    try {
      const found = await digester.digest({ path, content: content ?? 'jsonl', md5: false, lines: content !== undefined })
      if (temp === undefined) onBytes(found.bytes)
      return { sha256: found.sha256, bytes: found.bytes, lines: content === undefined ? undefined : found.lines }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') throw Object.assign(new Error(`no object at ${key}`), { code: 'EVS_ERR_CONNECTION_NOT_FOUND' })
      if (code !== UNREADABLE_CONTENT) throw err
      // Its hash still says whether it is what was recorded.
      const found = await digester.digest({ path, content: 'jsonl', md5: false, lines: false })
      if (temp === undefined) onBytes(found.bytes)
      return { sha256: found.sha256, bytes: found.bytes, lines: undefined, unreadable: (err as Error).message }
    }
  } finally {
    if (temp !== undefined) await rm(temp, { force: true })
  }
}

/** Runs `work` over `items`, `concurrency` at a time. */
async function forEach<T> (items: readonly T[], concurrency: number, work: (item: T, slot: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async (_, slot) => {
    while (next < items.length) await work(items[next++] as T, slot)
  }))
}

interface ChainEntry {
  seq: number
  key: string
  day: string
  digest?: ParsedDigest
}

const seqName = (seq: number): string => String(seq).padStart(12, '0')

/**
 * Checks what a files destination stored against its digest records, through its connection and
 * with no server running: every record's signature and link to the previous one, every recorded
 * file's bytes, and every data file's record. Reports each problem by key.
 */
export async function verifyFilesDestination (options: VerifiableOptions, context: DestinationVerifyContext, request: VerifyRequest): Promise<VerifyReport | undefined> {
  const integrity = options.integrity
  if (integrity === undefined || !integrity.enabled) return undefined
  const connection = context.connection(options.connection)
  if (connection === undefined) throw new Error(`connection "${options.connection}" is not defined`)
  const name = context.name
  const problems: VerifyProblem[] = []
  const open_: VerifyReport['open'] = []
  const notes: string[] = []
  const problem = (kind: VerifyProblem['kind'], key: string, message: string): void => { problems.push({ kind, key, message }) }

  // The keys signatures must match, by key id: given, or derived from the settings' own signing key.
  const publicKeys = new Map<string, KeyObject>()
  for (const pem of request.publicKeys ?? []) {
    const key = loadPublicKey(pem)
    publicKeys.set(keyIdOf(key), key)
  }
  if (publicKeys.size === 0 && integrity.signingKey !== undefined) {
    try {
      const key = loadSigningKey(signingKeyText(integrity.signingKey, context.baseDir)).publicKey
      publicKeys.set(keyIdOf(key), key)
      notes.push('signatures checked with the public key of the settings\' signing key')
    } catch {}
  }
  const expectSigned = integrity.signingKey !== undefined || publicKeys.size > 0
  let unchecked = 0

  const base = options.path.split('/').filter((s) => s !== '').join('/')
  const prefix = digestPrefix(options.path, name)
  const progress = (phase: string, done: number, total: number, bytes: number): void => request.onProgress?.({ phase, done, total, bytes })

  // 1. Digest objects, by instance.
  progress('listing digests', 0, 0, 0)
  const chains = new Map<string, Map<number, ChainEntry>>()
  for await (const { key } of connection.list(prefix)) {
    const parsed = parseDigestKey(key.slice(prefix.length))
    if (parsed === undefined) {
      problem('unexpected', key, 'an object in the digest folder that is not named like a digest record')
      continue
    }
    let chain = chains.get(parsed.instanceId)
    if (chain === undefined) chains.set(parsed.instanceId, chain = new Map())
    if (chain.has(parsed.seq)) {
      problem('chain-broken', key, `a second digest object for record ${parsed.seq} of instance ${parsed.instanceId} (the other is ${chain.get(parsed.seq)?.key ?? '?'})`)
      continue
    }
    chain.set(parsed.seq, { seq: parsed.seq, key, day: parsed.day })
  }

  // 2. Which records to read: all, or those of the days in range (and each range's neighbours).
  const fromDay = request.from === undefined ? undefined : new Date(request.from - 86_400_000).toISOString().slice(0, 10)
  const toDay = request.to === undefined ? undefined : new Date(request.to + 86_400_000).toISOString().slice(0, 10)
  const toRead: ChainEntry[] = []
  for (const chain of chains.values()) {
    for (const entry of chain.values()) {
      if ((fromDay === undefined || entry.day >= fromDay) && (toDay === undefined || entry.day <= toDay)) toRead.push(entry)
    }
  }
  // The record before the first one read in each chain: the link into the range is checked too.
  const reading = new Set(toRead)
  for (const chain of chains.values()) {
    let first: number | undefined
    for (const entry of chain.values()) if (reading.has(entry) && (first === undefined || entry.seq < first)) first = entry.seq
    const before = first === undefined ? undefined : chain.get(first - 1)
    if (before !== undefined && !reading.has(before)) {
      toRead.push(before)
      reading.add(before)
    }
  }
  let done = 0
  await forEach(toRead, canAppend(connection) ? 8 : 16, async (entry) => {
    try {
      entry.digest = parseDigest(await readAll(connection, entry.key))
    } catch (err) {
      problem('altered', entry.key, `the digest record cannot be read: ${(err as Error).message}`)
    }
    progress('reading digests', ++done, toRead.length, 0)
  })

  // 3. Each chain: names, signatures, links, and its end.
  const fileRecords: Array<{ record: FileRecord, digestKey: string }> = []
  const heads = new Map<string, HeadRecord>()
  let records = 0
  let headCount = 0
  const inRange = (at: string): boolean => {
    const ms = Date.parse(at)
    return (request.from === undefined || ms >= request.from) && (request.to === undefined || ms <= request.to)
  }
  const ranges = new Map<string, { min: number, max: number }>()
  const coveredFrom = new Map<string, number>()
  for (const [instanceId, chain] of chains) {
    const entries = [...chain.values()].sort((a, b) => a.seq - b.seq)
    const selected = entries.filter((e) => e.digest !== undefined && inRange(e.digest.record.at))
    const lo = request.from === undefined ? 1 : (selected[0]?.seq ?? entries.find((e) => reading.has(e))?.seq ?? 1)
    const last = entries[entries.length - 1] as ChainEntry
    const hi = request.to === undefined ? last.seq : Math.max(lo, ...selected.map((e) => e.seq))
    // Gaps: records that should be there and are not.
    let gapStart: number | undefined
    for (let seq = lo; seq <= hi + 1; seq++) {
      const present = seq <= hi && chain.has(seq)
      if (!present && seq <= hi && gapStart === undefined) gapStart = seq
      if ((present || seq > hi) && gapStart !== undefined) {
        const end = seq - 1
        problem('chain-broken', `${prefix}${instanceId}/*/${seqName(gapStart)}.json`, gapStart === end
          ? `record ${gapStart} of instance ${instanceId} is missing`
          : `records ${gapStart} to ${end} of instance ${instanceId} are missing`)
        gapStart = undefined
      }
    }
    for (const entry of entries) {
      const digest = entry.digest
      if (digest === undefined) continue
      const { record } = digest
      if (record.seq !== entry.seq || record.instanceId !== instanceId || record.destination !== name) {
        problem('altered', entry.key, `the record says destination ${record.destination}, instance ${record.instanceId}, record ${record.seq}: not what its name says`)
        continue
      }
      if (!selected.includes(entry)) continue
      records++
      if (publicKeys.size > 0) {
        const bad = checkSignature(digest, publicKeys)
        if (bad !== undefined) problem(digest.signature === undefined ? 'missing-signature' : 'bad-signature', entry.key, bad)
      } else if (digest.signature !== undefined) {
        unchecked++
      } else if (expectSigned) {
        problem('missing-signature', entry.key, 'the record is not signed, but the settings have a signing key')
      }
      // The link to the previous record.
      if (record.seq === 1) {
        if (record.prevHash !== null) problem('chain-broken', entry.key, 'the first record of a chain must have no previous hash')
      } else {
        const previous = chain.get(record.seq - 1)?.digest
        if (previous !== undefined && record.prevHash !== previous.hash) {
          problem('chain-broken', entry.key, `its previous hash does not match record ${record.seq - 1} (${previous.hash.slice(0, 16)}…): a record was changed, replaced or reordered`)
        }
      }
      if (record.type === 'file') {
        fileRecords.push({ record, digestKey: entry.key })
        const range = ranges.get(instanceId)
        if (range === undefined) ranges.set(instanceId, { min: record.fileSeq, max: record.fileSeq })
        else {
          range.min = Math.min(range.min, record.fileSeq)
          range.max = Math.max(range.max, record.fileSeq)
        }
      } else {
        headCount++
        heads.set(instanceId, record)
        if (record.coveredFrom !== undefined) coveredFrom.set(instanceId, record.coveredFrom)
        if (record.recovered !== undefined) {
          notes.push(record.recovered.stateLost === true
            ? `instance ${instanceId} lost its local state and continued its chain from the store at record ${record.seq} (${record.at})`
            : `instance ${instanceId} resumed after a crash at record ${record.seq} (${record.at}): ${record.recovered.files} file(s) left open or in the spool completed (recorded as each reaches its place), ${record.recovered.resentRecords} record(s) stored again`)
        }
      }
    }
    // The end of the chain: a clean stop, or recent heads (the server is running); else it was cut.
    const tail = last.digest?.record
    const beyondRange = request.to !== undefined && tail !== undefined && Date.parse(tail.at) > request.to
    if (!beyondRange && tail?.type === 'head' && tail.reason === 'stop' && tail.openFrom !== null) {
      notes.push(`instance ${instanceId} stopped (${tail.at}) with files from number ${tail.openFrom} not complete or not uploaded yet: its next start completes and records them`)
    }
    if (!beyondRange && tail !== undefined && !(tail.type === 'head' && tail.reason === 'stop')) {
      const age = request.now - Date.parse(tail.at)
      const allowed = 2 * integrity.headIntervalS * 1000 + TAIL_SLACK_MS
      if (age > allowed) {
        problem('tail-cut', last.key, `the chain of instance ${instanceId} ends at record ${tail.seq} (${tail.at}) without a clean stop, and no head followed in ${Math.round(age / 1000)} s (heads come every ${integrity.headIntervalS} s): records after it were removed, or the server stopped without a clean shutdown and has not run since`)
      }
    }
  }
  for (const head of request.knownHeads ?? []) {
    if (head.destination !== name) continue
    const chain = chains.get(head.instanceId)
    const lastSeq = chain === undefined ? 0 : Math.max(...chain.keys())
    if (head.seq > lastSeq) {
      problem('tail-cut', `${prefix}${head.instanceId}/*/${seqName(head.seq)}.json`, `head ${head.seq} of instance ${head.instanceId}, known from the logs, is not in the trail, which ends at record ${lastSeq}: the trail was cut after it`)
      continue
    }
    let entry = chain?.get(head.seq)
    if (entry !== undefined && entry.digest === undefined && !reading.has(entry)) {
      try {
        entry.digest = parseDigest(await readAll(connection, entry.key))
      } catch {
        entry = undefined
      }
    }
    if (entry?.digest !== undefined && entry.digest.hash !== head.hash) {
      problem('chain-broken', entry.key, `head ${head.seq} of instance ${head.instanceId} differs from the one the logs hold (hash ${entry.digest.hash.slice(0, 16)}…, logged ${head.hash.slice(0, 16)}…)`)
    }
  }
  if (unchecked > 0) {
    problem('unchecked', prefix, `${unchecked} signed record(s) whose signatures were not checked: give the public key with --public-key`)
  }

  // 4. Data files: every recorded one intact, every other one accounted for.
  progress('listing data files', 0, 0, 0)
  const data = new Map<string, number>()
  const digestFolder = `${base === '' ? '' : `${base}/`}${DIGEST_FOLDER}/`
  for await (const { key, size } of connection.list(base === '' ? '' : `${base}/`)) {
    if (key.startsWith(digestFolder) || basename(key).startsWith(PROBE_PREFIX)) continue
    data.set(key, size)
  }
  const recordedKeys = new Map<string, FileRecord>()
  for (const { record } of fileRecords) {
    const earlier = recordedKeys.get(record.key)
    if (earlier !== undefined && earlier.sha256 !== record.sha256) {
      problem('altered', record.key, `recorded twice with different contents (records ${earlier.seq} and ${record.seq} of instance ${record.instanceId})`)
    }
    recordedKeys.set(record.key, record)
  }
  let files = 0
  let bytes = 0
  let events = 0
  let firstAt: string | null = null
  let lastAt: string | null = null
  let checkedBytes = 0
  let checked = 0
  // Threads are worth starting only when there is much to read.
  let total = 0
  for (const record of recordedKeys.values()) total += record.bytes
  const workers = total >= POOL_THRESHOLD_BYTES ? Math.min(4, availableParallelism()) : 0
  const digester = new FileDigester({ workers, lowPriority: false })
  let scratchDir: Promise<string> | undefined
  const scratch = async (): Promise<string> => await (scratchDir ??= mkdtemp(join(tmpdir(), 'dss-event-server-verify-')))
  try {
    await forEach([...recordedKeys.values()], canAppend(connection) ? Math.max(1, workers) : 8, async (record) => {
      const size = data.get(record.key)
      if (size === undefined) problem('missing', record.key, `recorded (record ${record.seq} of instance ${record.instanceId}, ${record.bytes} bytes) but not in the store`)
      else if (size !== record.bytes) problem('altered', record.key, `${size} bytes, recorded ${record.bytes}`)
      else {
        try {
          const found = await digestObject(connection, record.key, digester, scratch, (n) => { checkedBytes += n })
          if (found.sha256 !== record.sha256) problem('altered', record.key, `its SHA-256 is ${found.sha256.slice(0, 16)}…, recorded ${record.sha256.slice(0, 16)}…`)
          else if (found.unreadable !== undefined) problem('altered', record.key, `its bytes are those recorded, but its events cannot be counted: ${found.unreadable}`)
          else if (found.lines !== undefined && found.lines !== record.lines) problem('altered', record.key, `it holds ${found.lines} events, recorded ${record.lines}`)
          else {
            files++
            bytes += record.bytes
            events += record.lines
            if (record.firstAt !== null && (firstAt === null || record.firstAt < firstAt)) firstAt = record.firstAt
            if (record.lastAt !== null && (lastAt === null || record.lastAt > lastAt)) lastAt = record.lastAt
          }
        } catch (err) {
          if ((err as { code?: string }).code === 'EVS_ERR_CONNECTION_NOT_FOUND') problem('missing', record.key, 'recorded but gone while being read')
          else throw err
        }
      }
      progress('checking data files', ++checked, recordedKeys.size, checkedBytes)
    })
  } finally {
    await digester.close()
    if (scratchDir !== undefined) await rm(await scratchDir, { recursive: true, force: true })
  }

  for (const [key] of data) {
    if (recordedKeys.has(key)) continue
    const parsed = parseDataName(basename(key))
    if (parsed === undefined) {
      problem('unexpected', key, 'a file that no digest record mentions and that is not named like a data file')
      continue
    }
    if (parsed.destination !== name) {
      if (context.destinations.has(parsed.destination)) continue // another destination's file in a shared folder
      problem('unexpected', key, `a file named for destination "${parsed.destination}", which the settings do not define`)
      continue
    }
    const instance = parsed.instanceId
    if (!chains.has(instance)) {
      problem('unexpected', key, `no digest record mentions it, and instance ${instance} has no digest chain`)
      continue
    }
    const range = ranges.get(instance)
    if (request.from !== undefined || request.to !== undefined) {
      // With a time range, only files between the first and last recorded in it are in question.
      if (range === undefined || parsed.fileSeq < range.min || parsed.fileSeq > range.max) {
        const head = heads.get(instance)
        if (!(request.to === undefined && head !== undefined && head.openFrom !== null && parsed.fileSeq >= head.openFrom)) continue
      }
    }
    const head = heads.get(instance)
    const covered = coveredFrom.get(instance)
    if (covered !== undefined && parsed.fileSeq < covered) {
      problem('unexpected', key, `no digest record mentions it; its number is below ${covered}, where the chain of instance ${instance} started: written before integrity was enabled, or added`)
    } else if (head !== undefined && head.openFrom !== null && parsed.fileSeq >= head.openFrom && request.to === undefined) {
      open_.push({ key, message: `not complete yet at the last head (${head.at}): still being written or waiting for upload` })
    } else {
      problem('unexpected', key, 'no digest record mentions it')
    }
  }

  const order = ['chain-broken', 'tail-cut', 'bad-signature', 'missing-signature', 'unchecked', 'altered', 'missing', 'unexpected']
  problems.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind) || a.key.localeCompare(b.key))
  return {
    destination: name,
    problems,
    open: open_.sort((a, b) => a.key.localeCompare(b.key)),
    summary: {
      instances: chains.size,
      records,
      heads: headCount,
      files,
      bytes,
      events,
      from: firstAt,
      to: lastAt,
      signed: publicKeys.size > 0,
      notes
    }
  }
}
