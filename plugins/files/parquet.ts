import type { RowGroup } from 'hyparquet'
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { ByteWriter, ParquetWriter } from 'hyparquet-writer'
import { snappyCompress } from 'hyparquet-writer/src/snappy.js'
import { DictionaryColumn, EventColumn, TimestampColumn, writeRowGroup, type ChunkSink, type PageCodec } from './parquet-columns.js'
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
 * Where the common fields are at the top level of the event whose text is at [start, end): the
 * [start, end) of each value, or -1 when absent. The last of duplicate keys wins, as with
 * JSON.parse. Returns false when the text is not an object as expected.
 */
function commonFields (b: Buffer, start: number, end: number, starts: Int32Array, ends: Int32Array): boolean {
  starts.fill(-1)
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
      starts[field] = valueStart
      ends[field] = i
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

/** Columns of one row group, encoded line by line as they are read (parquet-columns.ts). */
export class RowGroupColumns {
  readonly serverTimestamp = new TimestampColumn('serverTimestamp')
  readonly origAddress = new DictionaryColumn('origAddress', false)
  readonly topic = new DictionaryColumn('topic', false)
  readonly routingKey = new DictionaryColumn('routingKey', false)
  readonly common = COMMON_FIELDS.map((name) => new DictionaryColumn(name, true))
  readonly clientEvent: EventColumn
  bytes = 0
  readonly #starts = new Int32Array(COMMON_FIELDS.length)
  readonly #ends = new Int32Array(COMMON_FIELDS.length)
  #lastTimestamp = Buffer.alloc(32)
  #lastTimestampLength = -1
  #lastTimestampMs = 0

  /** `source` names the spool file in errors. */
  constructor (readonly codec: PageCodec, readonly source: string) {
    this.clientEvent = new EventColumn('clientEvent', codec)
  }

  get rows (): number {
    return this.clientEvent.rows
  }

  /** Adds the spool line number `line`, at [start, end) without its newline. */
  add (b: Buffer, start: number, end: number, line: number): void {
    while (end > start && isSpace(b[end - 1])) end--
    if (!at(b, start, HEAD_TOPIC)) throw this.#malformed(line, 'expected a line starting with {"topic":')
    const topicStart = start + HEAD_TOPIC.length
    const topicEnd = b[topicStart] === QUOTE ? stringEnd(b, topicStart, end) : -1
    if (topicEnd < 0) throw this.#malformed(line, 'unterminated topic')
    if (!at(b, topicEnd, KEY_ROUTING_KEY)) throw this.#malformed(line, 'expected "routingKey" after "topic"')
    const routingKeyStart = topicEnd + KEY_ROUTING_KEY.length
    const routingKeyEnd = b[routingKeyStart] === QUOTE ? stringEnd(b, routingKeyStart, end) : -1
    if (routingKeyEnd < 0) throw this.#malformed(line, 'unterminated routingKey')
    if (!at(b, routingKeyEnd, KEY_CLIENT_EVENT)) throw this.#malformed(line, 'expected "clientEvent" after "routingKey"')
    const eventStart = routingKeyEnd + KEY_CLIENT_EVENT.length

    // The tail is the server's own: `,"origAddress":"…","serverTimestamp":"…"}`, read from the end.
    if (b[end - 1] !== CLOSE_OBJECT || b[end - 2] !== QUOTE) throw this.#malformed(line, 'expected the line to end with "}')
    const timestampStart = b.lastIndexOf(QUOTE, end - 3) + 1
    const timestampKey = timestampStart - KEY_SERVER_TIMESTAMP.length
    if (timestampStart <= eventStart || !at(b, timestampKey, KEY_SERVER_TIMESTAMP)) throw this.#malformed(line, 'expected "serverTimestamp" last')
    // The address's opening quote: the first quote before its closing one not escaped by a backslash.
    let q = timestampKey - 2
    for (; q > eventStart; q--) {
      if (b[q] !== QUOTE) continue
      let backslashes = 0
      while (b[q - 1 - backslashes] === BACKSLASH) backslashes++
      if (backslashes % 2 === 0) break
    }
    const addressKey = q - KEY_ORIG_ADDRESS.length
    if (b[timestampKey - 1] !== QUOTE || addressKey <= eventStart || !at(b, addressKey, KEY_ORIG_ADDRESS)) throw this.#malformed(line, 'expected "origAddress" before "serverTimestamp"')
    if (!commonFields(b, eventStart, addressKey, this.#starts, this.#ends)) throw this.#malformed(line, 'clientEvent is not a JSON object')

    const timestampLength = end - 2 - timestampStart
    if (timestampLength !== this.#lastTimestampLength || b.compare(this.#lastTimestamp, 0, timestampLength, timestampStart, end - 2) !== 0) {
      this.#lastTimestampMs = parseTimestamp(b, timestampStart, end - 2)
      if (timestampLength > this.#lastTimestamp.length) this.#lastTimestamp = Buffer.alloc(2 * timestampLength)
      b.copy(this.#lastTimestamp, 0, timestampStart, end - 2)
      this.#lastTimestampLength = timestampLength
    }
    try {
      this.origAddress.add(b, q, timestampKey)
      this.topic.add(b, topicStart, topicEnd)
      this.routingKey.add(b, routingKeyStart, routingKeyEnd)
      for (let f = 0; f < COMMON_FIELDS.length; f++) {
        const column = this.common[f] as DictionaryColumn
        const valueStart = this.#starts[f] as number
        if (valueStart === -1 || b[valueStart] === 110 /* null */) column.addNull()
        else column.add(b, valueStart, this.#ends[f] as number)
      }
    } catch (err) {
      // Only a string the line's own checks let through; ingestion never spools one.
      if (err instanceof SyntaxError) throw this.#malformed(line, 'a string with a bad escape')
      throw err
    }
    this.serverTimestamp.add(this.#lastTimestampMs)
    // The event exactly as received.
    this.clientEvent.add(b, eventStart, addressKey)
    this.bytes += end - start + 1
  }

  #malformed (line: number, what: string): MalformedSpoolError {
    return new MalformedSpoolError(`${this.source}, line ${line}: ${what}`)
  }

  /** Writes the chunks, in schema order. */
  write (out: ChunkSink): RowGroup {
    return writeRowGroup(out, this.codec, this.rows, [this.serverTimestamp, this.origAddress, this.topic, this.routingKey, ...this.common, this.clientEvent])
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

  override appendBytes (bytes: Uint8Array): void {
    if (bytes.length < 1 << 16) {
      super.appendBytes(bytes)
      return
    }
    // A page: straight to the file, not through the buffer.
    this.flush()
    let at = 0
    while (at < bytes.length) at += writeSync(this.#fd, bytes, at, bytes.length - at)
    this.written += bytes.length
    this.offset += bytes.length
  }

  override finish (): void {
    this.flush()
  }
}

async function codecOf (options: ConvertOptions): Promise<PageCodec> {
  switch (options.compression) {
    case 'zstd': {
      const zstd = await loadZstd()
      return { codec: 'ZSTD', compress: (input) => zstd.compress(input, options.zstdLevel) }
    }
    case 'gzip': return { codec: 'GZIP', compress: (input) => gzipSync(input) }
    case 'snappy': return { codec: 'SNAPPY', compress: snappyCompress }
    case 'none': return { codec: 'UNCOMPRESSED', compress: undefined }
  }
}

const READ_CHUNK = 4 << 20

/**
 * Reads a spool file line by line, in chunks, and yields its rows a row group at a time: a group
 * closes at `rowGroupRows` rows or `rowGroupBytes` bytes of lines. The groups copy what they keep
 * of a line, so one read buffer serves the whole file: memory is bounded by the group, not the file.
 */
export function * spoolRowGroups (input: string, limits: Pick<ConvertOptions, 'rowGroupRows' | 'rowGroupBytes'>, codec: PageCodec): Generator<RowGroupColumns, { inputBytes: number }> {
  const fd = openSync(input, 'r')
  try {
    let inputBytes = 0
    let lineNumber = 0
    let group = new RowGroupColumns(codec, input)
    // One buffer, read into again and again: a group copies what it keeps of a line.
    let chunk = Buffer.allocUnsafeSlow(READ_CHUNK)
    let kept = 0
    for (;;) {
      if (kept === chunk.length) {
        const grown = Buffer.allocUnsafeSlow(2 * chunk.length)
        chunk.copy(grown, 0, 0, kept)
        chunk = grown
      }
      const n = readSync(fd, chunk, kept, chunk.length - kept, null)
      inputBytes += n
      const filled = kept + n
      const view = chunk.subarray(0, filled)
      let start = 0
      for (;;) {
        let newline = view.indexOf(LF, start)
        if (newline === -1) {
          if (n > 0) break
          newline = filled // the last line, without its newline
          if (start >= newline) break
        }
        lineNumber++
        if (newline > start) {
          group.add(view, start, newline, lineNumber)
          if (group.rows >= limits.rowGroupRows || group.bytes >= limits.rowGroupBytes) {
            yield group
            group = new RowGroupColumns(codec, input)
          }
        }
        start = newline + 1
      }
      if (n === 0) break
      kept = filled - start
      if (kept > 0) chunk.copyWithin(0, start, filled)
    }
    if (group.rows > 0) yield group
    return { inputBytes }
  } finally {
    closeSync(fd)
  }
}

/**
 * Converts a spool file of JSON lines into a Parquet file at `output` (created or truncated,
 * then fsync'ed). Streams: at most one row group of input (`rowGroupBytes`) is held, encoded and
 * mostly compressed. Synchronous I/O: this runs in a worker thread.
 */
export async function convertSpoolFile (input: string, output: string, options: ConvertOptions): Promise<ConvertResult> {
  const codec = await codecOf(options)
  const fd = openSync(output, 'w')
  try {
    const writer = new FileByteWriter(fd)
    // The chunks are ours (parquet-columns.ts); ParquetWriter writes the magic and the footer.
    const parquet = new ParquetWriter({
      writer,
      schema: parquetSchema(),
      codec: codec.codec,
      kvMetadata: [{ key: SCHEMA_VERSION_KEY, value: PARQUET_SCHEMA_VERSION }],
      createdBy: 'dss-event-server'
    })
    let rows = 0
    const groups = spoolRowGroups(input, options, codec)
    let next = groups.next()
    try {
      for (; next.done !== true; next = groups.next()) {
        const group = next.value
        parquet.row_groups.push(group.write(writer))
        parquet.num_rows += BigInt(group.rows)
        rows += group.rows
      }
    } finally {
      // A failed write (a full disk) ends the reading too: the spool file is closed for the retry.
      if (next.done !== true) groups.return({ inputBytes: 0 })
    }
    parquet.finish()
    fsyncSync(fd)
    return { rows, inputBytes: next.value.inputBytes, outputBytes: writer.written, rowGroups: parquet.row_groups.length }
  } finally {
    closeSync(fd)
  }
}
