// Parquet writer candidates, measured on the same DSS-like spool file: throughput (MB/s of spool
// input, reading and parsing included) and output size, per library and codec; plus the zstd
// libraries for `.jsonl.zst` and the baselines `.jsonl` and `.jsonl.gz`.
//
//   npm run build && node bench/parquet-writers.mjs [events=60000] [rounds=3]
//
// Only hyparquet-writer and @bokuweb/zstd-wasm are dependencies. The other candidates are loaded
// from BENCH_MODULES (a folder holding a node_modules), when set, and skipped otherwise:
//   mkdir /tmp/cands && cd /tmp/cands && npm init -y && \
//     npm install parquet-wasm apache-arrow @dsnp/parquetjs@1.8.8 @hpcc-js/wasm-zstd @toondepauw/node-zstd
//   BENCH_MODULES=/tmp/cands node bench/parquet-writers.mjs
import { createRequire } from 'node:module'
import { mkdtemp, rm, stat, writeFile, open } from 'node:fs/promises'
import { tmpdir, cpus, loadavg } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { gzipSync, constants as zlib } from 'node:zlib'
import { dssEvents, jsonLine } from './dss-events.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const dist = join(here, '..', 'dist', 'plugins', 'files', 'parquet.js')
const { convertSpoolFile, spoolRowGroups, spoolLineHead, parquetSchema, COMMON_FIELDS } = await import(pathToFileURL(dist).href)
const { loadZstd } = await import(pathToFileURL(join(here, '..', 'dist', 'plugins', 'files', 'zstd.js')).href)
const { ParquetWriter, ByteWriter } = await import('hyparquet-writer')

const EVENTS = Number(process.argv[2] ?? 60000)
const ROUNDS = Number(process.argv[3] ?? 3)
const LIMITS = { rowGroupRows: 100000, rowGroupBytes: 32 << 20 }

async function optional (name) {
  const places = [join(here, '..', 'package.json')]
  if (process.env.BENCH_MODULES) places.push(join(process.env.BENCH_MODULES, 'package.json'))
  for (const place of places) {
    try {
      return await import(pathToFileURL(createRequire(place).resolve(name)).href)
    } catch {}
  }
  return undefined
}

const dir = await mkdtemp(join(tmpdir(), 'evs-parquet-bench-'))
const events = dssEvents(EVENTS, 7)
const spoolPath = join(dir, 'input.parquet.jsonl')
const jsonl = Buffer.from(events.map((e) => jsonLine(e)).join(''))
await writeFile(spoolPath, Buffer.concat(events.map((e) => Buffer.concat([spoolLineHead(e.topic, e.routingKey), Buffer.from(jsonLine(e).slice(1))]))))
const inputBytes = (await stat(spoolPath)).size

/** Runs `fn` ROUNDS times; the median time. */
async function timed (fn) {
  const times = []
  let result
  for (let r = 0; r < ROUNDS; r++) {
    const started = performance.now()
    result = await fn()
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  return { ms: times[Math.floor(times.length / 2)], result }
}

/**
 * The spool's row groups as plain arrays (strings, numbers, byte arrays), as the other writers take
 * them: the server's own parse, its dictionaries then expanded (counted in those writers' time).
 */
function * plainGroups () {
  for (const g of spoolRowGroups(spoolPath, LIMITS, { codec: 'UNCOMPRESSED', compress: undefined })) {
    yield {
      rows: g.rows,
      serverTimestamp: Array.from(g.serverTimestamp.values),
      origAddress: g.origAddress.strings(),
      topic: g.topic.strings(),
      routingKey: g.routingKey.strings(),
      common: g.common.map((c) => c.strings()),
      clientEvent: [...g.clientEvent.events()]
    }
  }
}

const rows = []
function report (library, codec, ms, outputBytes, note = '') {
  rows.push({ library, codec, mbPerS: inputBytes / 1e6 / (ms / 1000), outputBytes, note })
  console.error(`${library} ${codec}: ${(inputBytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s, ${outputBytes} bytes ${note}`)
}

// 1. The server's converter (convertSpoolFile): its own column encoder from the spool bytes,
// hyparquet-writer's page headers and footer, @bokuweb/zstd-wasm for zstd.
for (const [compression, zstdLevel] of [['zstd', 1], ['zstd', 3], ['snappy'], ['gzip'], ['none']]) {
  const out = join(dir, `server-${compression}.parquet`)
  const { ms, result } = await timed(async () => await convertSpoolFile(spoolPath, out, { compression, zstdLevel: zstdLevel ?? 1, ...LIMITS }))
  report('server converter (hyparquet-writer footer)', compression, ms, result.outputBytes, compression === 'zstd' ? `as the server converts: @bokuweb/zstd-wasm, level ${zstdLevel}${zstdLevel === 1 ? ' (the default)' : ''}` : 'as the server converts')
}

// What the rows below spend before their writer starts: the server's parse, expanded into arrays.
{
  const { ms } = await timed(() => { for (const g of plainGroups()) void g })
  report('(input of the rows below) spool lines → JS arrays', '', ms, 0, 'included in each row below: subtract it to compare the writers alone')
}

// hyparquet-writer's own column writer (ParquetWriter.write), with zstd libraries plugged in.
async function hyparquetWith (compressor, label) {
  const schema = parquetSchema()
  const writeSchema = schema.map((e) => e.name === 'clientEvent' ? { ...e, converted_type: undefined } : e)
  const { ms, result } = await timed(async () => {
    const writer = new ByteWriter(1 << 20)
    const parquet = new ParquetWriter({ writer, schema: writeSchema, codec: 'ZSTD', compressors: { ZSTD: compressor } })
    for (const g of plainGroups()) {
      parquet.write({
        rowGroupSize: g.rows,
        columnData: [
          { name: 'serverTimestamp', data: g.serverTimestamp, encoding: 'DELTA_BINARY_PACKED' },
          { name: 'origAddress', data: g.origAddress },
          { name: 'topic', data: g.topic },
          { name: 'routingKey', data: g.routingKey },
          ...COMMON_FIELDS.map((name, f) => ({ name, data: g.common[f] })),
          { name: 'clientEvent', data: g.clientEvent, encoding: 'PLAIN', statistics: false }
        ]
      })
    }
    parquet.schema = schema
    parquet.finish()
    return writer.offset
  })
  report('hyparquet-writer', 'zstd', ms, result, label)
}
const bokuweb = await loadZstd()
for (const level of [1, 3]) await hyparquetWith((b) => bokuweb.compress(b, level), `zstd: @bokuweb/zstd-wasm, level ${level}`)
const hpcc = await optional('@hpcc-js/wasm-zstd').then(async (m) => await m?.Zstd.load())
if (hpcc !== undefined) await hyparquetWith((b) => hpcc.compress(b, 3), 'zstd: @hpcc-js/wasm-zstd, level 3')
const nodeZstd = await optional('@toondepauw/node-zstd')
if (nodeZstd !== undefined) {
  const encoder = new (nodeZstd.Encoder ?? nodeZstd.default.Encoder)(3)
  await hyparquetWith((b) => encoder.encodeSync(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), 'zstd: @toondepauw/node-zstd (native), level 3')
}

// 2. parquet-wasm with apache-arrow: each row group becomes an Arrow table, then a record batch in
// wasm memory, streamed through transformParquetStream.
const wasm = await optional('parquet-wasm')
const arrow = await optional('apache-arrow')
if (wasm !== undefined && arrow !== undefined) {
  const { Table, WriterPropertiesBuilder, Compression, transformParquetStream } = wasm
  const { tableToIPC, makeTable, vectorFromArray, Utf8, TimestampMillisecond, makeVector } = arrow
  const decoder = new TextDecoder()
  for (const [codec, value] of [['zstd', Compression.ZSTD], ['snappy', Compression.SNAPPY], ['gzip', Compression.GZIP]]) {
    const out = join(dir, `wasm-${codec}.parquet`)
    const { ms, result } = await timed(async () => {
      const groups = plainGroups()
      const batches = new ReadableStream({
        pull (controller) {
          const next = groups.next()
          if (next.done) { controller.close(); return }
          const g = next.value
          const table = makeTable({
            serverTimestamp: makeVector({ type: new TimestampMillisecond(), data: BigInt64Array.from(g.serverTimestamp, (v) => BigInt(v)) }),
            origAddress: vectorFromArray(g.origAddress, new Utf8()),
            topic: vectorFromArray(g.topic, new Utf8()),
            routingKey: vectorFromArray(g.routingKey, new Utf8()),
            ...Object.fromEntries(COMMON_FIELDS.map((name, f) => [name, vectorFromArray(g.common[f], new Utf8())])),
            // Arrow has no JSON type the writer maps to Parquet's: a plain string column.
            clientEvent: vectorFromArray(g.clientEvent.map((b) => decoder.decode(b)), new Utf8())
          })
          for (const batch of Table.fromIPCStream(tableToIPC(table, 'stream')).recordBatches()) controller.enqueue(batch)
        }
      })
      const props = new WriterPropertiesBuilder().setCompression(value).setMaxRowGroupSize(LIMITS.rowGroupRows).build()
      const bytes = await transformParquetStream(batches, props)
      const handle = await open(out, 'w')
      let size = 0
      for await (const chunk of bytes) {
        await handle.write(chunk)
        size += chunk.length
      }
      await handle.sync()
      await handle.close()
      return size
    })
    report('parquet-wasm + apache-arrow', codec, ms, result, codec === 'zstd' ? 'clientEvent as plain UTF8 (no JSON type)' : '')
  }
} else {
  console.error('parquet-wasm / apache-arrow: not installed, skipped (see BENCH_MODULES above)')
}

// 3. @dsnp/parquetjs: 1.8.8 is the last release for Node 20 (1.8.9 on need Node 24); no zstd codec.
const parquetjs = await optional('@dsnp/parquetjs')
if (parquetjs !== undefined) {
  const { ParquetSchema, ParquetWriter: PjsWriter } = parquetjs.default ?? parquetjs
  const decoder = new TextDecoder()
  for (const codec of ['SNAPPY', 'GZIP']) {
    const out = join(dir, `parquetjs-${codec}.parquet`)
    const schema = new ParquetSchema({
      serverTimestamp: { type: 'TIMESTAMP_MILLIS', compression: codec },
      origAddress: { type: 'UTF8', compression: codec },
      topic: { type: 'UTF8', compression: codec },
      routingKey: { type: 'UTF8', compression: codec },
      ...Object.fromEntries(COMMON_FIELDS.map((name) => [name, { type: 'UTF8', optional: true, compression: codec }])),
      clientEvent: { type: 'UTF8', compression: codec }
    })
    const { ms } = await timed(async () => {
      const writer = await PjsWriter.openFile(schema, out, { rowGroupSize: 10000 })
      for (const g of plainGroups()) {
        for (let i = 0; i < g.rows; i++) {
          const row = { serverTimestamp: new Date(g.serverTimestamp[i]), origAddress: g.origAddress[i], topic: g.topic[i], routingKey: g.routingKey[i], clientEvent: decoder.decode(g.clientEvent[i]) }
          COMMON_FIELDS.forEach((name, f) => { if (g.common[f][i] !== null) row[name] = g.common[f][i] })
          await writer.appendRow(row)
        }
      }
      await writer.close()
    })
    report('@dsnp/parquetjs 1.8.8', codec.toLowerCase(), ms, (await stat(out)).size, 'clientEvent as UTF8; no zstd codec')
  }
} else {
  console.error('@dsnp/parquetjs: not installed, skipped (see BENCH_MODULES above)')
}

// 4. Baselines, and zstd for `.jsonl.zst` (compressing the lines as one frame).
report('(baseline) .jsonl', 'none', 0.0001, jsonl.length, 'the same events as a jsonl destination writes them')
{
  const { ms, result } = await timed(() => gzipSync(jsonl, { level: zlib.Z_DEFAULT_COMPRESSION }).length)
  report('(baseline) .jsonl.gz', 'gzip level 6', ms, result, 'one gzip stream (the server writes one member per commit: a little larger)')
}
for (const level of [1, 3]) {
  const { ms, result } = await timed(() => bokuweb.compress(jsonl, level).length)
  report('.jsonl.zst: @bokuweb/zstd-wasm', `zstd level ${level}`, ms, result, 'as the server compresses (one frame per commit: a little larger)')
}
if (hpcc !== undefined) {
  const { ms, result } = await timed(() => hpcc.compress(jsonl, 3).length)
  report('.jsonl.zst: @hpcc-js/wasm-zstd', 'zstd level 3', ms, result, 'copies its output through a JS array')
}
if (nodeZstd !== undefined) {
  const encoder = new (nodeZstd.Encoder ?? nodeZstd.default.Encoder)(3)
  const { ms, result } = await timed(async () => (await encoder.encode(jsonl)).length)
  report('.jsonl.zst: @toondepauw/node-zstd', 'zstd level 3', ms, result, 'native, off the event loop')
}

await rm(dir, { recursive: true, force: true })
const jsonlBytes = jsonl.length
const lines = [
  `Parquet writers on ${EVENTS} DSS-like events (${(inputBytes / 1e6).toFixed(1)} MB of spool lines, ${(jsonlBytes / 1e6).toFixed(1)} MB as .jsonl); median of ${ROUNDS} rounds.`,
  `Machine: ${cpus().length} × ${cpus()[0]?.model}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} (shared: absolute figures are noisy, compare within the run).`,
  '',
  '| library | codec | MB/s of input | bytes | .jsonl / this | note |',
  '| --- | --- | ---: | ---: | ---: | --- |',
  ...rows.map((r) => `| ${r.library} | ${r.codec} | ${r.library.startsWith('(baseline) .jsonl') && r.codec === 'none' ? '' : r.mbPerS.toFixed(1)} | ${r.outputBytes || ''} | ${r.outputBytes ? (jsonlBytes / r.outputBytes).toFixed(2) : ''} | ${r.note} |`)
]
console.log(lines.join('\n'))
