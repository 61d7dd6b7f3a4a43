import type { ColumnChunk, CompressionCodec, Encoding, PageHeader, RowGroup } from 'hyparquet'
import { ByteWriter } from 'hyparquet-writer'
import { writePageHeader } from 'hyparquet-writer/src/datapage.js'
import { deltaBinaryPack } from 'hyparquet-writer/src/delta.js'
import { writeRleBitPackedHybrid } from 'hyparquet-writer/src/encoding.js'

/**
 * Column chunks of the Parquet schema, encoded straight from the bytes of the spool lines: no
 * row objects and no string per value. Strings go to per-chunk dictionaries keyed by their raw JSON
 * bytes, events are copied into PLAIN pages that are compressed as they fill, and a row group is
 * then written column after column (dictionary page, data pages) for ParquetWriter's footer.
 */

export type Compressor = (input: Uint8Array) => Uint8Array

/** What a column chunk is written with: the file's codec, and its compressor (none for UNCOMPRESSED). */
export interface PageCodec {
  codec: CompressionCodec
  compress: Compressor | undefined
}

/** The file being written: where the next byte goes, and a way to append. */
export interface ChunkSink {
  readonly offset: number
  appendBytes(bytes: Uint8Array): void
}

const QUOTE = 34
const BACKSLASH = 92

/** Events are cut into pages of about this many bytes: a reader holds one page at a time. */
const EVENT_PAGE_BYTES = 1 << 20
/** A chunk whose dictionary outgrows either limit is written PLAIN instead. */
const DICTIONARY_MAX_VALUES = 1 << 16
const DICTIONARY_MAX_BYTES = 1 << 20

/** A typed array that doubles as it fills. */
class Growing<A extends Int32Array | Float64Array> {
  values: A
  length = 0

  constructor (private readonly make: (size: number) => A) {
    this.values = make(1024)
  }

  push (value: number): void {
    if (this.length === this.values.length) {
      const grown = this.make(2 * this.length)
      grown.set(this.values)
      this.values = grown
    }
    this.values[this.length++] = value
  }

  view (): A {
    return this.values.subarray(0, this.length) as A
  }
}

const ints = (size: number): Int32Array => new Int32Array(size)

function writePage (out: ChunkSink, header: PageHeader, levels: Uint8Array | undefined, body: Uint8Array): number {
  const headerBytes = new ByteWriter(64)
  writePageHeader(headerBytes, header)
  out.appendBytes(headerBytes.getBytes())
  if (levels !== undefined) out.appendBytes(levels)
  out.appendBytes(body)
  return headerBytes.offset + header.uncompressed_page_size
}

function compressed (codec: PageCodec, bytes: Uint8Array): Uint8Array {
  return codec.compress === undefined ? bytes : codec.compress(bytes)
}

interface ChunkMeta {
  type: 'INT64' | 'BYTE_ARRAY'
  name: string
  encodings: Encoding[]
  rows: number
  nulls: number
  start: number
  dataPageOffset: number
  dictionaryPageOffset?: number
  uncompressed: number
  statistics?: { min_value?: bigint, max_value?: bigint, null_count: bigint }
}

function columnChunk (out: ChunkSink, codec: PageCodec, meta: ChunkMeta): ColumnChunk {
  return {
    file_offset: BigInt(meta.start),
    meta_data: {
      type: meta.type,
      encodings: meta.encodings,
      path_in_schema: [meta.name],
      codec: codec.codec,
      num_values: BigInt(meta.rows),
      total_uncompressed_size: BigInt(meta.uncompressed),
      total_compressed_size: BigInt(out.offset - meta.start),
      data_page_offset: BigInt(meta.dataPageOffset),
      dictionary_page_offset: meta.dictionaryPageOffset === undefined ? undefined : BigInt(meta.dictionaryPageOffset),
      statistics: meta.statistics ?? { null_count: BigInt(meta.nulls) }
    }
  }
}

/**
 * Bytes a string value stands for: its UTF-8 text, unescaped; any other JSON value as its text.
 * A bad escape throws JSON.parse's SyntaxError.
 */
function valueBytes (b: Buffer, start: number, end: number): Buffer {
  if (b[start] !== QUOTE) return Buffer.from(b.subarray(start, end))
  for (let i = start + 1; i < end - 1; i++) {
    if (b[i] === BACKSLASH) return Buffer.from(JSON.parse(b.toString('utf8', start, end)) as string)
  }
  return Buffer.from(b.subarray(start + 1, end - 1))
}

/** A string column: one dictionary per chunk, keyed by the raw JSON bytes of a value. */
export class DictionaryColumn {
  readonly #lookup = new Map<string, number>()
  readonly #values: Buffer[] = []
  #valueBytes = 0
  #indexes = new Growing(ints)
  /** 1 for a value, 0 for a null, per row: only kept for a nullable column. */
  readonly #defined: Growing<Int32Array> | undefined
  #rows = 0
  #present = 0
  #lastRaw = Buffer.alloc(64)
  #lastLength = -1
  #lastIndex = 0
  /** Once the dictionary passes its limits: the chunk's values, PLAIN-encoded as they come. */
  #plain: Buffer | undefined
  #plainAt = 0

  constructor (readonly name: string, readonly nullable: boolean) {
    this.#defined = nullable ? new Growing(ints) : undefined
  }

  get rows (): number {
    return this.#rows
  }

  /** Adds the JSON value at [start, end) (a string, or any other value taken as its JSON text). */
  add (b: Buffer, start: number, end: number): void {
    this.#defined?.push(1)
    this.#rows++
    this.#present++
    if (this.#plain !== undefined) {
      this.#appendPlain(valueBytes(b, start, end))
      return
    }
    // Mostly the same value as the row before: compared byte by byte, without a call into C++.
    const length = end - start
    const last = this.#lastRaw
    let same = length === this.#lastLength
    for (let k = 0; same && k < length; k++) same = b[start + k] === last[k]
    if (!same) {
      const key = b.toString('latin1', start, end)
      let index = this.#lookup.get(key)
      if (index === undefined) {
        index = this.#values.length
        const bytes = valueBytes(b, start, end)
        this.#values.push(bytes)
        this.#valueBytes += bytes.length
        this.#lookup.set(key, index)
      }
      if (length > last.length) this.#lastRaw = Buffer.alloc(2 * length)
      const copy = this.#lastRaw
      for (let k = 0; k < length; k++) copy[k] = b[start + k] as number
      this.#lastLength = length
      this.#lastIndex = index
    }
    this.#indexes.push(this.#lastIndex)
    if (this.#values.length > DICTIONARY_MAX_VALUES || this.#valueBytes > DICTIONARY_MAX_BYTES) this.#toPlain()
  }

  addNull (): void {
    if (this.#defined === undefined) throw new Error(`${this.name} is not nullable`)
    this.#defined.push(0)
    this.#rows++
  }

  /** Too many distinct values for a dictionary to pay: the values themselves, from now on. */
  #toPlain (): void {
    this.#plain = Buffer.allocUnsafe(2 * (4 * this.#indexes.length + this.#valueBytes))
    for (const index of this.#indexes.view()) this.#appendPlain(this.#values[index] as Buffer)
    this.#lookup.clear()
    this.#values.length = 0
    this.#valueBytes = 0
    this.#indexes = new Growing(ints)
  }

  #appendPlain (value: Buffer): void {
    let plain = this.#plain as Buffer
    if (this.#plainAt + 4 + value.length > plain.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * plain.length, this.#plainAt + 4 + value.length))
      plain.copy(grown, 0, 0, this.#plainAt)
      plain = this.#plain = grown
    }
    this.#plainAt = plain.writeUInt32LE(value.length, this.#plainAt)
    this.#plainAt += value.copy(plain, this.#plainAt)
  }

  /** The values as strings, nulls as null: for comparisons with other writers. */
  strings (): Array<string | null> {
    const present: string[] = []
    if (this.#plain !== undefined) {
      for (let at = 0; at < this.#plainAt;) {
        const length = this.#plain.readUInt32LE(at)
        present.push(this.#plain.toString('utf8', at + 4, at + 4 + length))
        at += 4 + length
      }
    } else {
      for (const index of this.#indexes.view()) present.push((this.#values[index] as Buffer).toString('utf8'))
    }
    let next = 0
    const out: Array<string | null> = []
    for (let row = 0; row < this.#rows; row++) {
      const defined = this.#defined === undefined || this.#defined.values[row] === 1
      out.push(defined ? present[next++] as string : null)
    }
    return out
  }

  write (out: ChunkSink, codec: PageCodec): ColumnChunk {
    const start = out.offset
    const nulls = this.#rows - this.#present
    let levels: Uint8Array | undefined
    if (this.#defined !== undefined) {
      const writer = new ByteWriter(64)
      writeRleBitPackedHybrid(writer, this.#defined.view(), 1)
      levels = writer.getBytes()
    }
    const dataPage = (encoding: Encoding, body: Uint8Array): number => {
      const packed = compressed(codec, body)
      const levelBytes = levels?.length ?? 0
      return writePage(out, {
        type: 'DATA_PAGE_V2',
        uncompressed_page_size: levelBytes + body.length,
        compressed_page_size: levelBytes + packed.length,
        data_page_header_v2: {
          num_values: this.#rows,
          num_nulls: nulls,
          num_rows: this.#rows,
          encoding,
          definition_levels_byte_length: levelBytes,
          repetition_levels_byte_length: 0,
          is_compressed: codec.compress !== undefined
        }
      }, levels, packed)
    }

    const meta = { type: 'BYTE_ARRAY' as const, name: this.name, rows: this.#rows, nulls, start }
    if (this.#plain !== undefined || this.#values.length === 0) {
      // Past the limits, or no value at all (a dictionary of none would be an empty page).
      const uncompressed = dataPage('PLAIN', this.#plain?.subarray(0, this.#plainAt) ?? Buffer.alloc(0))
      return columnChunk(out, codec, { ...meta, encodings: ['PLAIN', 'RLE'], dataPageOffset: start, uncompressed })
    }
    const dictionary = plainByteArrays(this.#values, this.#valueBytes)
    const packed = compressed(codec, dictionary)
    let uncompressed = writePage(out, {
      type: 'DICTIONARY_PAGE',
      uncompressed_page_size: dictionary.length,
      compressed_page_size: packed.length,
      dictionary_page_header: { num_values: this.#values.length, encoding: 'PLAIN' }
    }, undefined, packed)
    const dataPageOffset = out.offset
    const indexes = this.#indexes.view()
    const bitWidth = this.#values.length <= 1 ? 0 : 32 - Math.clz32(this.#values.length - 1)
    const body = new ByteWriter(Math.max(64, (indexes.length * bitWidth) >> 3))
    body.appendUint8(bitWidth)
    writeRleBitPackedHybrid(body, indexes, bitWidth)
    uncompressed += dataPage('RLE_DICTIONARY', body.getBytes())
    return columnChunk(out, codec, { ...meta, encodings: ['PLAIN', 'RLE', 'RLE_DICTIONARY'], dataPageOffset, dictionaryPageOffset: start, uncompressed })
  }
}

function plainByteArrays (values: Buffer[], bytes: number): Buffer {
  const plain = Buffer.allocUnsafe(4 * values.length + bytes)
  let at = 0
  for (const value of values) {
    at = plain.writeUInt32LE(value.length, at)
    at += value.copy(plain, at)
  }
  return plain
}

/** The timestamps of a chunk, in milliseconds: DELTA_BINARY_PACKED, with min and max. */
export class TimestampColumn {
  readonly #values = new Growing((size) => new Float64Array(size))
  #min = Number.POSITIVE_INFINITY
  #max = Number.NEGATIVE_INFINITY

  constructor (readonly name: string) {}

  get rows (): number {
    return this.#values.length
  }

  /** The milliseconds of the rows so far. */
  get values (): Float64Array {
    return this.#values.view()
  }

  add (ms: number): void {
    this.#values.push(ms)
    if (ms < this.#min) this.#min = ms
    if (ms > this.#max) this.#max = ms
  }

  write (out: ChunkSink, codec: PageCodec): ColumnChunk {
    const start = out.offset
    const values = this.values
    let plain = deltaBinaryPacked(values)
    if (plain === undefined) {
      // Timestamps that jump by more than 2^32 ms within a chunk: the library's BigInt path.
      const body = new ByteWriter(Math.max(1024, 2 * this.rows))
      deltaBinaryPack(body, Array.from(values, BigInt), 'INT64')
      plain = body.getBytes()
    }
    const packed = compressed(codec, plain)
    const uncompressed = writePage(out, {
      type: 'DATA_PAGE_V2',
      uncompressed_page_size: plain.length,
      compressed_page_size: packed.length,
      data_page_header_v2: {
        num_values: this.rows,
        num_nulls: 0,
        num_rows: this.rows,
        encoding: 'DELTA_BINARY_PACKED',
        definition_levels_byte_length: 0,
        repetition_levels_byte_length: 0,
        is_compressed: codec.compress !== undefined
      }
    }, undefined, packed)
    return columnChunk(out, codec, {
      type: 'INT64',
      name: this.name,
      encodings: ['DELTA_BINARY_PACKED'],
      rows: this.rows,
      nulls: 0,
      start,
      dataPageOffset: start,
      uncompressed,
      statistics: this.rows === 0 ? { null_count: 0n } : { min_value: BigInt(this.#min), max_value: BigInt(this.#max), null_count: 0n }
    })
  }
}

const BLOCK_VALUES = 128
const MINIBLOCKS = 4
const MINIBLOCK_VALUES = BLOCK_VALUES / MINIBLOCKS

/** Appends `value` (a non-negative integer below 2^53) as a ULEB128 varint. */
function varint (out: number[], value: number): void {
  while (value >= 128) {
    out.push((value % 128) + 128)
    value = Math.floor(value / 128)
  }
  out.push(value)
}

const zigzag = (value: number): number => value >= 0 ? 2 * value : -2 * value - 1

/**
 * DELTA_BINARY_PACKED for integers held exactly as numbers, in number arithmetic (the library
 * goes through BigInt for any value past 32 bits, which milliseconds since 1970 are); undefined
 * when the deltas of a block spread over 2^32 or more.
 */
export function deltaBinaryPacked (values: Float64Array): Uint8Array | undefined {
  const out: number[] = []
  varint(out, BLOCK_VALUES)
  varint(out, MINIBLOCKS)
  varint(out, values.length)
  const first = values[0] ?? 0
  // Number arithmetic is exact below 2^53, and zigzag doubles: beyond, the BigInt path.
  if (Math.abs(first) >= 2 ** 52) return undefined
  varint(out, zigzag(first))
  const deltas = new Float64Array(BLOCK_VALUES)
  for (let from = 1; from < values.length; from += BLOCK_VALUES) {
    const count = Math.min(BLOCK_VALUES, values.length - from)
    let min = Number.POSITIVE_INFINITY
    for (let i = 0; i < count; i++) {
      const delta = (values[from + i] as number) - (values[from + i - 1] as number)
      deltas[i] = delta
      if (delta < min) min = delta
    }
    if (Math.abs(min) >= 2 ** 52) return undefined
    varint(out, zigzag(min))
    const widthsAt = out.length
    for (let m = 0; m < MINIBLOCKS; m++) out.push(0)
    for (let m = 0; m * MINIBLOCK_VALUES < count; m++) {
      const low = m * MINIBLOCK_VALUES
      const to = Math.min(count, low + MINIBLOCK_VALUES)
      let max = 0
      for (let i = low; i < to; i++) max = Math.max(max, (deltas[i] as number) - min)
      if (max >= 2 ** 32) return undefined
      const width = max === 0 ? 0 : 32 - Math.clz32(max)
      out[widthsAt + m] = width
      // Bits least significant first, a whole miniblock (padded with zeros) of `width` bits each.
      let bits = 0
      let pending = 0
      for (let i = low; i < low + MINIBLOCK_VALUES; i++) {
        pending += (i < to ? (deltas[i] as number) - min : 0) * 2 ** bits
        bits += width
        while (bits >= 8) {
          out.push(pending % 256)
          pending = Math.floor(pending / 256)
          bits -= 8
        }
      }
    }
  }
  return Uint8Array.from(out)
}

interface EventPage {
  bytes: Uint8Array
  uncompressed: number
  rows: number
}

/** The events as received: PLAIN byte arrays, compressed a page at a time as the page fills. */
export class EventColumn {
  #page = Buffer.allocUnsafe(EVENT_PAGE_BYTES + 4096)
  #at = 0
  #pageRows = 0
  readonly #pages: EventPage[] = []
  rows = 0

  constructor (readonly name: string, readonly codec: PageCodec) {}

  add (b: Buffer, start: number, end: number): void {
    const length = end - start
    if (this.#at + 4 + length > this.#page.length) {
      if (this.#pageRows > 0) this.#seal()
      if (4 + length > this.#page.length) this.#page = Buffer.allocUnsafe(4 + length)
    }
    this.#at = this.#page.writeUInt32LE(length, this.#at)
    this.#at += b.copy(this.#page, this.#at, start, end)
    this.#pageRows++
    this.rows++
    if (this.#at >= EVENT_PAGE_BYTES) this.#seal()
  }

  /** The events as byte arrays: for comparisons with other writers. */
  * events (): Generator<Uint8Array> {
    if (this.codec.compress !== undefined) throw new Error('events() reads uncompressed columns only')
    for (const page of [...this.#pages, { bytes: this.#page.subarray(0, this.#at), uncompressed: this.#at, rows: this.#pageRows }]) {
      const view = Buffer.from(page.bytes.buffer, page.bytes.byteOffset, page.bytes.length)
      for (let at = 0; at < view.length;) {
        const length = view.readUInt32LE(at)
        yield view.subarray(at + 4, at + 4 + length)
        at += 4 + length
      }
    }
  }

  #seal (): void {
    const plain = this.#page.subarray(0, this.#at)
    // Uncompressed, the page must outlive the buffer it was filled in.
    const bytes = this.codec.compress === undefined ? Buffer.from(plain) : this.codec.compress(plain)
    this.#pages.push({ bytes, uncompressed: this.#at, rows: this.#pageRows })
    this.#at = 0
    this.#pageRows = 0
  }

  write (out: ChunkSink): ColumnChunk {
    if (this.#pageRows > 0) this.#seal()
    const start = out.offset
    let uncompressed = 0
    for (const page of this.#pages) {
      uncompressed += writePage(out, {
        type: 'DATA_PAGE_V2',
        uncompressed_page_size: page.uncompressed,
        compressed_page_size: page.bytes.length,
        data_page_header_v2: {
          num_values: page.rows,
          num_nulls: 0,
          num_rows: page.rows,
          encoding: 'PLAIN',
          definition_levels_byte_length: 0,
          repetition_levels_byte_length: 0,
          is_compressed: this.codec.compress !== undefined
        }
      }, undefined, page.bytes)
    }
    return columnChunk(out, this.codec, { type: 'BYTE_ARRAY', name: this.name, encodings: ['PLAIN'], rows: this.rows, nulls: 0, start, dataPageOffset: start, uncompressed })
  }
}

/** Writes the chunks of one row group, in schema order; the row group for the footer. */
export function writeRowGroup (out: ChunkSink, codec: PageCodec, rows: number, columns: Array<{ write: (out: ChunkSink, codec: PageCodec) => ColumnChunk }>): RowGroup {
  const start = out.offset
  const chunks = columns.map((column) => column.write(out, codec))
  let uncompressed = 0n
  for (const chunk of chunks) uncompressed += chunk.meta_data?.total_uncompressed_size ?? 0n
  return { columns: chunks, total_byte_size: uncompressed, num_rows: BigInt(rows), total_compressed_size: BigInt(out.offset - start) }
}
