import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { ByteWriter, ParquetWriter } from 'hyparquet-writer'
import { loadZstd } from './zstd.js'

/**
 * Parquet output of the files destination: the schema, the spool line format it converts from,
 * and the conversion itself (run in a worker thread by converter.ts).
 *
 * A Parquet destination spools JSON lines that carry topic and routing key ahead of the usual
 * fields: `{"topic":…,"routingKey":…,"clientEvent":…,"origAddress":…,"serverTimestamp":…}`.
 */

/** Written as `dss-event-server.schema-version` in every file's key-value metadata; bumped on any change. */
export const PARQUET_SCHEMA_VERSION = '1'
export const SCHEMA_VERSION_KEY = 'dss-event-server.schema-version'

type SchemaElement = ConstructorParameters<typeof ParquetWriter>[0]['schema'][number]

export type ParquetCompression = 'zstd' | 'snappy' | 'gzip' | 'none'

export interface ConvertOptions {
  compression: ParquetCompression
  /** zstd level (1 fastest … 19); ignored by the other codecs. */
  zstdLevel: number
  /** A row group is closed once it holds this many events... */
  rowGroupRows: number
  /** ...or this many bytes of spool lines, whichever comes first: this bounds memory. */
  rowGroupBytes: number
}

export interface ConvertResult {
  rows: number
  inputBytes: number
  outputBytes: number
  rowGroups: number
}

/** The common DSS fields, typed as nullable strings, in column order. */
export const COMMON_FIELDS = ['msgType', 'authUser', 'authSource', 'clientIP', 'projectKey'] as const

/** Suffix of a Parquet destination's spool files, and of the files they become. */
export const SPOOL_SUFFIX = '.parquet.jsonl'
export const PARQUET_SUFFIX = '.parquet'

/** What a spool line of a Parquet destination starts with, before the event line's own fields. */
export function spoolLineHead (topic: string, routingKey: string): Buffer {
  return Buffer.from(`{"topic":${JSON.stringify(topic)},"routingKey":${JSON.stringify(routingKey)},`)
}

const stringColumn = (name: string, required: boolean): SchemaElement => ({
  name,
  type: 'BYTE_ARRAY',
  converted_type: 'UTF8',
  logical_type: { type: 'STRING' },
  repetition_type: required ? 'REQUIRED' : 'OPTIONAL'
})

/** The schema of version 1, as written in the file footer. */
export function parquetSchema (): SchemaElement[] {
  return [
    { name: 'schema', num_children: 10 },
    {
      name: 'serverTimestamp',
      type: 'INT64',
      converted_type: 'TIMESTAMP_MILLIS',
      logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MILLIS' },
      repetition_type: 'REQUIRED'
    },
    stringColumn('origAddress', true),
    stringColumn('topic', true),
    stringColumn('routingKey', true),
    ...COMMON_FIELDS.map((name) => stringColumn(name, false)),
    { name: 'clientEvent', type: 'BYTE_ARRAY', converted_type: 'JSON', logical_type: { type: 'JSON' }, repetition_type: 'REQUIRED' }
  ]
}

/** A spool file the converter cannot read: retrying cannot help. */
export class MalformedSpoolError extends Error {
  readonly permanent = true
  constructor (message: string) {
    super(message)
    this.name = 'MalformedSpoolError'
  }
}

// Byte values.
const QUOTE = 34
const BACKSLASH = 92
const OPEN_OBJECT = 123
const CLOSE_OBJECT = 125
const OPEN_ARRAY = 91
const CLOSE_ARRAY = 93
const COMMA = 44
const COLON = 58
const LF = 10

const HEAD_TOPIC = Buffer.from('{"topic":')
const KEY_ROUTING_KEY = Buffer.from(',"routingKey":')
const KEY_CLIENT_EVENT = Buffer.from(',"clientEvent":')
const KEY_ORIG_ADDRESS = Buffer.from(',"origAddress":')
const KEY_SERVER_TIMESTAMP = Buffer.from(',"serverTimestamp":"')
const COMMON_KEYS = COMMON_FIELDS.map((name) => Buffer.from(`"${name}"`))

function at (b: Uint8Array, i: number, token: Uint8Array): boolean {
  if (i < 0 || i + token.length > b.length) return false
  for (let k = 0; k < token.length; k++) if (b[i + k] !== token[k]) return false
  return true
}

const isSpace = (c: number | undefined): boolean => c === 32 || c === 10 || c === 13 || c === 9

/** Set by stringEnd: the string just scanned holds an escape. */
let escaped = false

/** Index after the closing quote of the string whose opening quote is at `i`; -1 past `end`. */
function stringEnd (b: Uint8Array, i: number, end: number): number {
  escaped = false
  for (i++; i < end; i++) {
    const c = b[i]
    if (c === QUOTE) return i + 1
    if (c === BACKSLASH) {
      escaped = true
      i++
    }
  }
  return -1
}

function decodeString (b: Buffer, start: number, end: number, hasEscapes: boolean): string {
  return hasEscapes ? JSON.parse(b.toString('utf8', start, end)) as string : b.toString('utf8', start + 1, end - 1)
}

/** Index after the JSON value (already validated at ingestion) that starts at `i`; -1 if malformed. */
function valueEnd (b: Uint8Array, i: number, end: number): number {
  const c = b[i]
  if (c === QUOTE) return stringEnd(b, i, end)
  if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
    let depth = 0
    for (; i < end; i++) {
      const d = b[i]
      if (d === QUOTE) {
        i = stringEnd(b, i, end) - 1
        if (i < 0) return -1
      } else if (d === OPEN_OBJECT || d === OPEN_ARRAY) {
        depth++
      } else if (d === CLOSE_OBJECT || d === CLOSE_ARRAY) {
        if (--depth === 0) return i + 1
      }
    }
    return -1
  }
  while (i < end && b[i] !== COMMA && b[i] !== CLOSE_OBJECT && b[i] !== CLOSE_ARRAY && !isSpace(b[i])) i++
  return i
}

/**
 * The common fields at the top level of the event whose text is at [start, end): a string as
 * itself, `null` as null, any other value as its JSON text as received. The last of duplicate keys
 * wins, as with JSON.parse. Returns false when the text is not an object as expected.
 */
function commonFields (b: Buffer, start: number, end: number, out: Array<string | null>): boolean {
  out.fill(null)
  let i = start
  while (isSpace(b[i])) i++
  if (b[i++] !== OPEN_OBJECT) return false
  for (;;) {
    while (isSpace(b[i])) i++
    if (b[i] === CLOSE_OBJECT) return true
    if (b[i] !== QUOTE) return false
    const keyStart = i
    i = stringEnd(b, i, end)
    if (i < 0) return false
    let field = -1
    if (escaped) {
      field = (COMMON_FIELDS as readonly string[]).indexOf(JSON.parse(b.toString('utf8', keyStart, i)) as string)
    } else {
      for (let f = 0; f < COMMON_KEYS.length; f++) {
        const key = COMMON_KEYS[f] as Buffer
        if (key.length === i - keyStart && at(b, keyStart, key)) {
          field = f
          break
        }
      }
    }
    while (isSpace(b[i])) i++
    if (b[i++] !== COLON) return false
    while (isSpace(b[i])) i++
    const valueStart = i
    i = valueEnd(b, i, end)
    if (i < 0 || i === valueStart) return false
    if (field !== -1) {
      const first = b[valueStart]
      out[field] = first === QUOTE
        ? decodeString(b, valueStart, i, escaped)
        : first === 110 /* null */ ? null : b.toString('utf8', valueStart, i)
    }
    while (isSpace(b[i])) i++
    const c = b[i++]
    if (c === CLOSE_OBJECT) return true
    if (c !== COMMA) return false
  }
}

const digit = (b: Uint8Array, i: number): number => (b[i] as number) - 48
const two = (b: Uint8Array, i: number): number => digit(b, i) * 10 + digit(b, i + 1)

/** `YYYY-MM-DDTHH:mm:ss.SSS±HHMM` (what ZonedTime.timestamp writes) as milliseconds since the epoch. */
function parseTimestamp (b: Buffer, start: number, end: number): number {
  if (end - start === 28 && b[start + 4] === 45 && b[start + 10] === 84 && b[start + 19] === 46) {
    const year = digit(b, start) * 1000 + digit(b, start + 1) * 100 + two(b, start + 2)
    const ms = digit(b, start + 20) * 100 + two(b, start + 21)
    const sign = b[start + 23] === 45 ? -1 : 1
    const offsetMinutes = sign * (two(b, start + 24) * 60 + two(b, start + 26))
    const value = Date.UTC(year, two(b, start + 5) - 1, two(b, start + 8), two(b, start + 11), two(b, start + 14), two(b, start + 17), ms) - offsetMinutes * 60000
    if (Number.isFinite(value)) return value
  }
  // Not the server's own format: accept any ISO-8601 text Date understands (`+HHMM` made `+HH:MM`).
  const text = b.toString('latin1', start, end).replace(/([+-]\d\d)(\d\d)$/, '$1:$2')
  const value = Date.parse(text)
  if (Number.isNaN(value)) throw new MalformedSpoolError(`serverTimestamp ${JSON.stringify(text)} is not a timestamp`)
  return value
}

/** A copy of the last bytes seen in some place of the lines, to tell whether the next are the same. */
class LastBytes {
  #bytes = Buffer.alloc(256)
  #length = -1

  same (b: Buffer, start: number, end: number): boolean {
    return end - start === this.#length && b.compare(this.#bytes, 0, this.#length, start, end) === 0
  }

  set (b: Buffer, start: number, end: number): void {
    if (end - start > this.#bytes.length) this.#bytes = Buffer.alloc(2 * (end - start))
    this.#length = b.copy(this.#bytes, 0, start, end)
  }
}

/** Columns of one row group, filled line by line. */
export class RowGroupColumns {
  serverTimestamp: number[] = []
  origAddress: string[] = []
  topic: string[] = []
  routingKey: string[] = []
  common: Array<Array<string | null>> = COMMON_FIELDS.map(() => [])
  clientEvent: Uint8Array[] = []
  bytes = 0
  readonly #fields: Array<string | null> = COMMON_FIELDS.map(() => null)
  #lastTimestamp = ''
  #lastTimestampMs = 0
  readonly #head = new LastBytes()
  #topic = ''
  #routingKey = ''
  readonly #address = new LastBytes()
  #origAddress = ''

  get rows (): number {
    return this.clientEvent.length
  }

  /** Adds the spool line at [start, end) (without its newline); `where` names it in errors. */
  add (b: Buffer, start: number, end: number, where: () => string): void {
    while (end > start && isSpace(b[end - 1])) end--
    const malformed = (what: string): MalformedSpoolError => new MalformedSpoolError(`${where()}: ${what}`)
    if (!at(b, start, HEAD_TOPIC)) throw malformed('expected a line starting with {"topic":')
    const i = start + HEAD_TOPIC.length
    const topicEnd = stringEnd(b, i, end)
    if (topicEnd < 0) throw malformed('unterminated topic')
    const topicEscaped = escaped
    if (!at(b, topicEnd, KEY_ROUTING_KEY)) throw malformed('expected "routingKey" after "topic"')
    const routingKeyStart = topicEnd + KEY_ROUTING_KEY.length
    const routingKeyEnd = stringEnd(b, routingKeyStart, end)
    if (routingKeyEnd < 0) throw malformed('unterminated routingKey')
    // Lines of a file mostly share topic and routing key: decode them once, as one string each.
    if (!this.#head.same(b, start, routingKeyEnd)) {
      this.#head.set(b, start, routingKeyEnd)
      this.#topic = decodeString(b, i, topicEnd, topicEscaped)
      this.#routingKey = decodeString(b, routingKeyStart, routingKeyEnd, escaped)
    }
    const topic = this.#topic
    const routingKey = this.#routingKey
    if (!at(b, routingKeyEnd, KEY_CLIENT_EVENT)) throw malformed('expected "clientEvent" after "routingKey"')
    const eventStart = routingKeyEnd + KEY_CLIENT_EVENT.length

    // The tail is the server's own: `,"origAddress":"…","serverTimestamp":"…"}`, read from the end.
    if (b[end - 1] !== CLOSE_OBJECT || b[end - 2] !== QUOTE) throw malformed('expected the line to end with "}')
    const timestampStart = b.lastIndexOf(QUOTE, end - 3) + 1
    const timestampKey = timestampStart - KEY_SERVER_TIMESTAMP.length
    if (timestampStart <= eventStart || !at(b, timestampKey, KEY_SERVER_TIMESTAMP)) throw malformed('expected "serverTimestamp" last')
    // The address's opening quote: the first quote before its closing one not escaped by a backslash.
    let q = timestampKey - 2
    for (; q > eventStart; q--) {
      if (b[q] !== QUOTE) continue
      let backslashes = 0
      while (b[q - 1 - backslashes] === BACKSLASH) backslashes++
      if (backslashes % 2 === 0) break
    }
    const addressKey = q - KEY_ORIG_ADDRESS.length
    if (b[timestampKey - 1] !== QUOTE || addressKey <= eventStart || !at(b, addressKey, KEY_ORIG_ADDRESS)) throw malformed('expected "origAddress" before "serverTimestamp"')
    if (!this.#address.same(b, q, timestampKey)) {
      this.#address.set(b, q, timestampKey)
      let addressEscaped = false
      for (let k = q + 1; k < timestampKey - 1 && !addressEscaped; k++) addressEscaped = b[k] === BACKSLASH
      this.#origAddress = decodeString(b, q, timestampKey, addressEscaped)
    }
    const origAddress = this.#origAddress

    if (!commonFields(b, eventStart, addressKey, this.#fields)) throw malformed('clientEvent is not a JSON object')
    const timestampText = b.toString('latin1', timestampStart, end - 2)
    if (timestampText !== this.#lastTimestamp) {
      this.#lastTimestampMs = parseTimestamp(b, timestampStart, end - 2)
      this.#lastTimestamp = timestampText
    }
    this.serverTimestamp.push(this.#lastTimestampMs)
    this.origAddress.push(origAddress)
    this.topic.push(topic)
    this.routingKey.push(routingKey)
    for (let f = 0; f < COMMON_FIELDS.length; f++) (this.common[f] as Array<string | null>).push(this.#fields[f] as string | null)
    // A view of the spool bytes: the event exactly as received, written as is.
    this.clientEvent.push(b.subarray(eventStart, addressKey))
    this.bytes += end - start + 1
  }
}

/** A ByteWriter that writes to a file descriptor as it goes, so the file never sits whole in memory. */
class FileByteWriter extends ByteWriter {
  readonly #fd: number
  written = 0

  constructor (fd: number) {
    super(1 << 20)
    this.#fd = fd
  }

  override ensure (size: number): void {
    if (this.index > 1 << 20) this.flush()
    super.ensure(size)
  }

  flush (): void {
    let at = 0
    const bytes = new Uint8Array(this.buffer, 0, this.index)
    while (at < bytes.length) at += writeSync(this.#fd, bytes, at, bytes.length - at)
    this.written += bytes.length
    this.index = 0
  }

  override finish (): void {
    this.flush()
  }
}

export type Compressor = (input: Uint8Array) => Uint8Array

async function codecOf (options: ConvertOptions): Promise<{ codec: 'ZSTD' | 'SNAPPY' | 'GZIP' | 'UNCOMPRESSED', compressors: Record<string, Compressor> }> {
  switch (options.compression) {
    case 'zstd': {
      const zstd = await loadZstd()
      return { codec: 'ZSTD', compressors: { ZSTD: (input) => zstd.compress(input, options.zstdLevel) } }
    }
    case 'gzip': return { codec: 'GZIP', compressors: { GZIP: (input) => gzipSync(input) } }
    case 'snappy': return { codec: 'SNAPPY', compressors: {} }
    case 'none': return { codec: 'UNCOMPRESSED', compressors: {} }
  }
}

const READ_CHUNK = 4 << 20

/**
 * Reads a spool file line by line, in chunks, and yields its rows a row group at a time: a group
 * closes at `rowGroupRows` rows or `rowGroupBytes` bytes of lines. Only the chunks a group's events
 * are in stay referenced, so memory is bounded by the group, not the file.
 */
export function * spoolRowGroups (input: string, limits: Pick<ConvertOptions, 'rowGroupRows' | 'rowGroupBytes'>): Generator<RowGroupColumns, { inputBytes: number }> {
  const fd = openSync(input, 'r')
  try {
    let inputBytes = 0
    let lineNumber = 0
    let group = new RowGroupColumns()
    let carry: Buffer | undefined
    for (;;) {
      const size = Math.max(READ_CHUNK, 2 * (carry?.length ?? 0))
      const chunk = Buffer.allocUnsafeSlow(size)
      let filled = carry?.copy(chunk) ?? 0
      const n = readSync(fd, chunk, filled, size - filled, null)
      filled += n
      inputBytes += n
      let start = 0
      for (;;) {
        let newline = chunk.indexOf(LF, start)
        if (newline === -1 || newline >= filled) {
          if (n > 0) break
          newline = filled // the last line, without its newline
          if (start >= newline) break
        }
        lineNumber++
        if (newline > start) {
          const line = lineNumber
          group.add(chunk, start, newline, () => `${input}, line ${line}`)
          if (group.rows >= limits.rowGroupRows || group.bytes >= limits.rowGroupBytes) {
            yield group
            group = new RowGroupColumns()
          }
        }
        start = newline + 1
      }
      if (n === 0) break
      carry = start < filled ? chunk.subarray(start, filled) : undefined
    }
    if (group.rows > 0) yield group
    return { inputBytes }
  } finally {
    closeSync(fd)
  }
}

/** The columns of a row group as the writer takes them, with their encodings. */
function columnData (g: RowGroupColumns): Parameters<ParquetWriter['write']>[0]['columnData'] {
  return [
    { name: 'serverTimestamp', data: g.serverTimestamp, encoding: 'DELTA_BINARY_PACKED' },
    { name: 'origAddress', data: g.origAddress },
    { name: 'topic', data: g.topic },
    { name: 'routingKey', data: g.routingKey },
    ...COMMON_FIELDS.map((name, f) => ({ name, data: g.common[f] as Array<string | null> })),
    // Every event is different: no dictionary, and no min/max statistics nobody filters on.
    { name: 'clientEvent', data: g.clientEvent, encoding: 'PLAIN', statistics: false }
  ]
}

/**
 * Converts a spool file of JSON lines into a Parquet file at `output` (created or truncated,
 * then fsync'ed). Streams: at most one row group of input (`rowGroupBytes`) is held, plus what
 * the writer needs to encode it. Synchronous I/O: this runs in a worker thread.
 */
export async function convertSpoolFile (input: string, output: string, options: ConvertOptions): Promise<ConvertResult> {
  const { codec, compressors } = await codecOf(options)
  const footerSchema = parquetSchema()
  // clientEvent goes in as bytes: without its converted type while writing, the writer takes them
  // as they are (with it, it would re-serialize values); the footer then says JSON.
  const writeSchema = footerSchema.map((e) => e.name === 'clientEvent' ? { ...e, converted_type: undefined } : e)
  const fd = openSync(output, 'w')
  try {
    const writer = new FileByteWriter(fd)
    const parquet = new ParquetWriter({
      writer,
      schema: writeSchema,
      codec,
      compressors,
      kvMetadata: [{ key: SCHEMA_VERSION_KEY, value: PARQUET_SCHEMA_VERSION }],
      createdBy: 'dss-event-server'
    })
    let rows = 0
    let rowGroups = 0
    const groups = spoolRowGroups(input, options)
    let next = groups.next()
    for (; next.done !== true; next = groups.next()) {
      const group = next.value
      void parquet.write({ rowGroupSize: group.rows, columnData: columnData(group) })
      rows += group.rows
      rowGroups++
    }
    parquet.schema = footerSchema
    parquet.finish()
    fsyncSync(fd)
    return { rows, inputBytes: next.value.inputBytes, outputBytes: writer.written, rowGroups }
  } finally {
    closeSync(fd)
  }
}
