import { describe, expect, it } from 'vitest'
import pino from 'pino'
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { request as httpRequest, Agent } from 'node:http'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { listFiles, start, tempDir } from './helpers.js'
import { spawnServer } from './child-server.js'
import { expectCasesMatch, parquetEncodings, parquetSchemaOf, postParquetCases, readParquet } from './parquet-fixtures.js'
import { convertSpoolFile, MalformedSpoolError, spoolLineHead } from '../plugins/files/parquet.js'
import { deltaBinaryPacked } from '../plugins/files/parquet-columns.js'
import { ByteWriter } from 'hyparquet-writer'
import { deltaBinaryPack } from 'hyparquet-writer/src/delta.js'
import { ParquetStage } from '../plugins/files/parquet-stage.js'
import type { SpoolFile } from '../plugins/files/uploader.js'
import { zstdDecompressAll, zstdFrames } from '../plugins/files/zstd.js'
import { dssEvents, jsonLine } from '../bench/dss-events.mjs'

const silent = pino({ level: 'silent' })

function fsDocument (destinations: Array<Record<string, unknown>>, server: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    server: { instanceId: 'pq-1', ...server },
    connections: { local: { type: 'filesystem', root: './out' } },
    destinations: destinations.map((d) => ({ connection: 'local', ...d }))
  }
}

async function parquetFiles (root: string): Promise<string[]> {
  return (await listFiles(root)).filter((f) => f.endsWith('.parquet')).map((f) => join(root, f))
}

async function jsonLines (root: string): Promise<string[]> {
  const out: string[] = []
  for (const file of await listFiles(root)) {
    if (!file.endsWith('.jsonl')) continue
    out.push(...(await readFile(join(root, file), 'utf8')).split('\n').filter((l) => l !== ''))
  }
  return out
}

function post (url: string, body: string, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/events/t/r`, { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('parquet output: filesystem', () => {
  it('writes .parquet files an independent reader reads back: every event once, field for field as its JSON line', async () => {
    const dir = await tempDir()
    const app = await start({
      baseDir: dir,
      document: fsDocument([
        { name: 'lines', path: 'jsonl' },
        // No topic or routing-key folders: those columns come from the events, not from the path.
        { name: 'columns', path: 'parquet', format: 'parquet', folderByTopic: false, folderByRoutingKey: false }
      ], { timeZone: 'Asia/Kolkata' })
    })
    await postParquetCases(app)
    await app.close()
    const files = await parquetFiles(join(dir, 'out', 'parquet'))
    expect(files.length).toBeGreaterThanOrEqual(1)
    for (const file of files) expect(file).toMatch(/\/parquet\/\d{4}\/\d\d\/\d\d\/\d\d\/pq-1_columns_\d{10}\.parquet$/)
    expectCasesMatch(await readParquet(files), await jsonLines(join(dir, 'out', 'jsonl')))
    // Nothing else is visible in the folder, and nothing is left in the spool.
    expect((await listFiles(join(dir, 'out', 'parquet'))).every((f) => f.endsWith('.parquet'))).toBe(true)
    expect(await listFiles(join(dir, 'data', 'state', 'columns', 'spool'))).toEqual([])
  })

  it('writes the documented schema: typed columns, clientEvent as JSON, the schema version in the metadata', async () => {
    const dir = await tempDir()
    const app = await start({ baseDir: dir, document: fsDocument([{ name: 'all', path: 'events', format: 'parquet' }]) })
    expect((await app.inject({ method: 'POST', url: '/events/generic/rk', payload: { msgType: 'x' } })).statusCode).toBe(200)
    await app.close()
    const [file] = await parquetFiles(join(dir, 'out'))
    expect(await parquetSchemaOf(file as string)).toEqual({
      columns: {
        serverTimestamp: 'TIMESTAMP WITH TIME ZONE',
        origAddress: 'VARCHAR',
        topic: 'VARCHAR',
        routingKey: 'VARCHAR',
        msgType: 'VARCHAR',
        authUser: 'VARCHAR',
        authSource: 'VARCHAR',
        clientIP: 'VARCHAR',
        projectKey: 'VARCHAR',
        clientEvent: 'JSON'
      },
      metadata: { 'dss-event-server.schema-version': '1' }
    })
  })

  for (const compression of ['zstd', 'snappy', 'gzip', 'none']) {
    it(`compression ${compression}: the column chunks say so, and the rows read back`, async () => {
      const dir = await tempDir()
      const app = await start({ baseDir: dir, document: fsDocument([{ name: 'all', path: 'events', format: 'parquet', compression }]) })
      for (let i = 0; i < 5; i++) expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { i, msgType: 'm' } })).statusCode).toBe(200)
      await app.close()
      const files = await parquetFiles(join(dir, 'out'))
      const rows = await readParquet(files)
      expect(rows.map((r) => JSON.parse(r.clientEvent).i).sort()).toEqual([0, 1, 2, 3, 4])
      const { DuckDBInstance } = await import('@duckdb/node-api')
      const connection = await (await DuckDBInstance.create(':memory:')).connect()
      const codecs = (await connection.runAndReadAll(`SELECT DISTINCT compression FROM parquet_metadata('${files[0] as string}')`)).getRowObjectsJS()
      connection.closeSync()
      expect(codecs).toEqual([{ compression: compression === 'none' ? 'UNCOMPRESSED' : compression.toUpperCase() }])
    })
  }

  it('splits a file into row groups by rowGroupRows and rowGroupBytes', async () => {
    const dir = await tempDir()
    const app = await start({ baseDir: dir, document: fsDocument([{ name: 'all', path: 'events', format: 'parquet', rowGroupRows: 40 }]) })
    const body = Array.from({ length: 100 }, (_, i) => JSON.stringify({ i })).join('\n')
    expect((await app.inject({ method: 'POST', url: '/events/t/r', headers: { 'content-type': 'application/x-ndjson' }, payload: body })).statusCode).toBe(200)
    await app.close()
    const [file] = await parquetFiles(join(dir, 'out'))
    const { DuckDBInstance } = await import('@duckdb/node-api')
    const connection = await (await DuckDBInstance.create(':memory:')).connect()
    const groups = (await connection.runAndReadAll(`SELECT row_group_id, any_value(row_group_num_rows)::INTEGER AS n FROM parquet_metadata('${file as string}') GROUP BY 1 ORDER BY 1`)).getRowObjectsJS()
    connection.closeSync()
    expect(groups.map((g) => g.n)).toEqual([40, 40, 20])
    expect((await readParquet([file as string])).map((r) => JSON.parse(r.clientEvent).i)).toEqual(Array.from({ length: 100 }, (_, i) => i))
  })

  it('converts when a file is completed while running (flushEveryS), off the request path', async () => {
    const dir = await tempDir()
    const app = await start({ baseDir: dir, document: fsDocument([{ name: 'all', path: 'events', format: 'parquet', flushEveryS: 0.3 }]) })
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
    // Completed means placed: counted once the file is in its folder and the folder synced.
    const completed = async (): Promise<boolean> => /evs_files_completed_total\{destination="all"\} 1/.test((await app.inject({ method: 'GET', url: '/metrics' })).body)
    const until = Date.now() + 30_000
    while (!(await completed())) {
      if (Date.now() > until) throw new Error('no file completed after flushEveryS')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    expect(await parquetFiles(join(dir, 'out'))).toHaveLength(1)
    const stats = app.eventServer.destinations.get('all')?.stats?.() as { parquet: { converted: number, convertedRows: number }, pendingBytes: number }
    expect(stats.parquet).toMatchObject({ converted: 1, convertedRows: 1 })
    expect(stats.pendingBytes).toBe(0)
  })

  it('an unwritable destination folder: /ready says so, events wait in the spool, and are placed once it is writable (at the next start here)', async () => {
    const dir = await tempDir()
    await mkdir(join(dir, 'out'), { recursive: true })
    // A file where the destination folder must go: no folder can be made there, even as root.
    await writeFile(join(dir, 'out', 'events'), 'not a folder')
    const document = fsDocument([{ name: 'all', path: 'events', format: 'parquet', uploadRetryInitialS: 0.05, uploadRetryMaxS: 0.1, uploadShutdownGraceS: 1 }])
    const app = await start({ baseDir: dir, document })
    const ready = await app.inject({ method: 'GET', url: '/ready' })
    expect(ready.statusCode).toBe(503)
    expect(ready.body).toContain('cannot write')
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
    await app.close()
    const waiting = await listFiles(join(dir, 'data', 'state', 'all', 'spool'))
    expect(waiting).toHaveLength(1)
    expect(waiting[0]).toMatch(/\.parquet$/)

    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'out', 'events'))
    const again = await start({ baseDir: dir, document })
    expect((await again.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200)
    await again.close()
    const rows = await readParquet(await parquetFiles(join(dir, 'out')))
    expect(rows.map((r) => r.clientEvent)).toEqual(['{"n":1}'])
    expect(await listFiles(join(dir, 'data', 'state', 'all', 'spool'))).toEqual([])
  })

  it('refuses snappy for JSON lines, with the settings path', async () => {
    const dir = await tempDir()
    await expect(start({ baseDir: dir, document: fsDocument([{ name: 'all', compression: 'snappy' }]) }))
      .rejects.toThrow(/destinations\/0\/compression: expected "none", "gzip" or "zstd" with format "jsonl"/)
  })

  it('on the bench\'s DSS-like events, Parquet is at least 4 times smaller than .jsonl and smaller than .jsonl.gz', async () => {
    const dir = await tempDir()
    const app = await start({
      baseDir: dir,
      document: fsDocument([
        { name: 'plain', path: 'plain', folderByTopic: false, folderByRoutingKey: false, partitioningPeriod: 'MONTH' },
        { name: 'gz', path: 'gz', compression: 'gzip', folderByTopic: false, folderByRoutingKey: false, partitioningPeriod: 'MONTH' },
        { name: 'zst', path: 'zst', compression: 'zstd', folderByTopic: false, folderByRoutingKey: false, partitioningPeriod: 'MONTH' },
        { name: 'columns', path: 'columns', format: 'parquet', folderByTopic: false, folderByRoutingKey: false, partitioningPeriod: 'MONTH' }
      ])
    })
    const events = dssEvents(12000, 3)
    for (let i = 0; i < events.length; i += 100) {
      const body = events.slice(i, i + 100).map((e) => e.text.replace('{', `{"topic":${JSON.stringify(e.topic)},"routingKey":${JSON.stringify(e.routingKey)},`)).join('\n')
      expect((await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/x-ndjson' }, payload: body })).statusCode).toBe(200)
    }
    await app.close()
    const size = async (folder: string): Promise<number> => {
      let total = 0
      for (const f of await listFiles(join(dir, 'out', folder))) total += (await stat(join(dir, 'out', folder, f))).size
      return total
    }
    const sizes = { jsonl: await size('plain'), gz: await size('gz'), zst: await size('zst'), parquet: await size('columns') }
    console.log(`sizes of ${events.length} DSS-like events (bytes): ${JSON.stringify(sizes)}; .jsonl / .parquet = ${(sizes.jsonl / sizes.parquet).toFixed(2)}, .jsonl.gz / .parquet = ${(sizes.gz / sizes.parquet).toFixed(2)}`)
    expect(sizes.parquet * 4).toBeLessThanOrEqual(sizes.jsonl)
    expect(sizes.parquet).toBeLessThan(sizes.gz)
    expect((await readParquet(await parquetFiles(join(dir, 'out', 'columns'))))).toHaveLength(events.length)
  }, 120_000)
})

describe('parquet conversion', () => {
  it('reads lines the server did not write itself strictly: a malformed spool file is refused as such', async () => {
    const dir = await tempDir()
    const input = join(dir, 'x.parquet.jsonl')
    await writeFile(input, '{"clientEvent":{"a":1},"origAddress":"1.2.3.4","serverTimestamp":"2026-01-01T00:00:00.000+0000"}\n')
    await expect(convertSpoolFile(input, join(dir, 'x.parquet'), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 10, rowGroupBytes: 1 << 20 }))
      .rejects.toThrow(MalformedSpoolError)
    // A string with a bad escape (ingestion never spools one) is malformed too, not worth a retry.
    await writeFile(input, `${spoolLineHead('t', 'r').toString()}"clientEvent":{"msgType":"\\q"},"origAddress":"1.2.3.4","serverTimestamp":"2026-01-01T00:00:00.000+0000"}\n`)
    await expect(convertSpoolFile(input, join(dir, 'x.parquet'), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 10, rowGroupBytes: 1 << 20 }))
      .rejects.toThrow(/line 1: a string with a bad escape/)
  })

  it('parses timestamps with any offset, addresses with escapes, and a last line without its newline', async () => {
    const dir = await tempDir()
    const input = join(dir, 'x.parquet.jsonl')
    const line = (topic: string, event: string, address: string, timestamp: string): string =>
      `${spoolLineHead(topic, 'r').toString()}"clientEvent":${event},"origAddress":${JSON.stringify(address)},"serverTimestamp":"${timestamp}"}`
    await writeFile(input, [
      line('a', '{"n":1}', '10.0.0.1', '2026-11-26T08:17:43.123+0530'),
      line('b', '{"n":2,"s":"\\"origAddress\\":"}', 'we"ird\\', '2026-11-25T18:47:43.123-0800'),
      line('c', '{ "n" : 3 }', '::1', '2026-11-26T02:47:43.123Z')
    ].join('\n'))
    const result = await convertSpoolFile(input, join(dir, 'x.parquet'), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 10, rowGroupBytes: 1 << 20 })
    expect(result).toMatchObject({ rows: 3, rowGroups: 1 })
    const rows = await readParquet([join(dir, 'x.parquet')])
    const instant = Date.UTC(2026, 10, 26, 2, 47, 43, 123)
    expect(rows.map((r) => [r.topic, r.clientEvent, r.origAddress, r.serverTimestamp])).toEqual([
      ['a', '{"n":1}', '10.0.0.1', instant],
      ['b', '{"n":2,"s":"\\"origAddress\\":"}', 'we"ird\\', instant],
      ['c', '{ "n" : 3 }', '::1', instant]
    ])
  })

  it('encodes the edges readers meet: dictionaries that outgrow their limits, an event larger than a page, escapes, non-string fields, timestamps out of order', async () => {
    const dir = await tempDir()
    const input = join(dir, 'x.parquet.jsonl')
    const line = (topic: string, event: string, timestamp: string): string =>
      `${spoolLineHead(topic, 'r').toString()}"clientEvent":${event},"origAddress":"10.0.0.1","serverTimestamp":"${timestamp}"}`
    const stamp = (ms: number): string => new Date(ms).toISOString().replace('Z', '+0000')
    const base = Date.UTC(2026, 10, 26)
    const lines: string[] = []
    const expected: Array<[string, string | null, string | null, string | null, number]> = []
    const push = (topic: string, event: string, authUser: string | null, msgType: string | null, projectKey: string | null, ms: number): void => {
      lines.push(line(topic, event, stamp(ms)))
      expected.push([topic, authUser, msgType, projectKey, ms])
    }
    // 70,000 distinct users (past the 65,536 values a dictionary takes): authUser goes PLAIN;
    // msgType stays a dictionary; projectKey holds 1.2 MB of distinct values (past 1 MiB).
    for (let i = 0; i < 70_000; i++) {
      const project = i < 600 ? `P${String(i).padStart(2000, '0')}` : null
      const event = JSON.stringify({ msgType: `m${i % 3}`, authUser: `user-${i}`, ...(project === null ? {} : { projectKey: project }) })
      push('t', event, `user-${i}`, `m${i % 3}`, project, base + i)
    }
    // Larger than a page (1 MiB), between small ones.
    const big = JSON.stringify({ msgType: 'big', blob: 'x'.repeat(1_500_000) })
    push('t', big, null, 'big', null, base)
    // Escapes in topic and fields, values that are not strings, null, a key repeated (the last
    // counts); timestamps that go back, then jump by 2^33 ms (deltas no 32-bit block holds).
    push('aé"b', '{"authUser":"\\u00e9\\"q\\"","msgType":42,"projectKey":{"k":[1,2]}}', 'é"q"', '42', '{"k":[1,2]}', base - 5)
    push('aé"b', '{"authUser":null,"msgType":true,"msgType":"last"}', null, 'last', null, base + 2 ** 33)
    await writeFile(input, lines.join('\n') + '\n')
    for (const compression of ['zstd', 'none'] as const) {
      const output = join(dir, `x-${compression}.parquet`)
      const result = await convertSpoolFile(input, output, { compression, zstdLevel: 1, rowGroupRows: 1_000_000, rowGroupBytes: 1 << 30 })
      expect(result).toMatchObject({ rows: expected.length, rowGroups: 1 })
      const rows = await readParquet([output])
      expect(rows.map((r) => [r.topic, r.authUser, r.msgType, r.projectKey, r.serverTimestamp])).toEqual(expected)
      expect(rows[70_000]?.clientEvent).toBe(big)
      const encodings = Object.fromEntries((await parquetEncodings(output)).map((c) => [c.column, c.encodings]))
      expect(encodings.authUser).not.toContain('RLE_DICTIONARY')
      expect(encodings.projectKey).not.toContain('RLE_DICTIONARY')
      expect(encodings.msgType).toContain('RLE_DICTIONARY')
      expect(encodings.serverTimestamp).toContain('DELTA_BINARY_PACKED')
    }
  })

  it('packs timestamps as the library would, in number arithmetic', () => {
    for (const n of [1, 2, 31, 32, 33, 127, 128, 129, 300, 4097]) {
      for (const step of [(): number => 1, (): number => 0, (i: number): number => i % 3 === 0 ? -7 : 5, (i: number): number => (i * 7919) % 100_000 - 20_000]) {
        const values = new Float64Array(n)
        let t = Date.UTC(2026, 10, 26, 1, 2, 3, 4)
        for (let i = 0; i < n; i++) {
          values[i] = t
          t += step(i)
        }
        const theirs = new ByteWriter()
        deltaBinaryPack(theirs, Array.from(values, BigInt), 'INT64')
        expect(Buffer.from(deltaBinaryPacked(values) as Uint8Array)).toEqual(Buffer.from(theirs.getBytes()))
      }
    }
    expect(deltaBinaryPacked(Float64Array.of(0, 2 ** 32, 0))).toBeUndefined()
    expect(deltaBinaryPacked(Float64Array.of(2 ** 52, 2 ** 52 + 1))).toBeUndefined()
  })

  it('holds one row group of input at a time: many groups from a file larger than rowGroupBytes', async () => {
    const dir = await tempDir()
    const input = join(dir, 'x.parquet.jsonl')
    const events = dssEvents(3000, 5)
    await writeFile(input, events.map((e) => spoolLineHead(e.topic, e.routingKey).toString() + jsonLine(e).slice(1)).join(''))
    const result = await convertSpoolFile(input, join(dir, 'x.parquet'), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 1_000_000, rowGroupBytes: 256 * 1024 })
    expect(result.rowGroups).toBeGreaterThanOrEqual(Math.floor(result.inputBytes / (256 * 1024)))
    const rows = await readParquet([join(dir, 'x.parquet')])
    expect(rows.map((r) => r.clientEvent)).toEqual(events.map((e) => e.text))
  })
})

describe('parquet: crashes and restarts', () => {
  async function spoolState (dir: string, entries: Record<string, Buffer | string>): Promise<SpoolFile[]> {
    const files: SpoolFile[] = []
    for (const [key, body] of Object.entries(entries)) {
      const path = join(dir, 'spool', ...key.split('/'))
      await mkdir(join(path, '..'), { recursive: true })
      await writeFile(path, body)
      files.push({ key, path, size: Buffer.byteLength(body), since: 0 })
    }
    return files
  }

  function stage (dir: string, placed: SpoolFile[]): ParquetStage {
    return new ParquetStage({
      spoolDir: join(dir, 'spool'),
      quarantineDir: join(dir, 'spool-quarantine'),
      convert: { compression: 'zstd', zstdLevel: 3, rowGroupRows: 100, rowGroupBytes: 1 << 20 },
      timeoutMs: 60_000,
      retryInitialMs: 10,
      retryMaxMs: 50,
      logger: silent,
      place: (file) => { placed.push(file) },
      onSpoolBytes: () => {},
      onError: () => {}
    })
  }

  const spoolLine = (n: number): string => `${spoolLineHead('t', 'r').toString()}"clientEvent":{"n":${n}},"origAddress":"1.2.3.4","serverTimestamp":"2026-11-26T02:47:43.123+0000"}\n`

  it('restart recovery: a .tmp is redone, a .parquet beside its JSON lines is kept and they are dropped, a lone .parquet is placed', async () => {
    const dir = await tempDir()
    // A complete Parquet file, as a conversion that finished before the crash left it.
    await mkdir(join(dir, 'made'))
    await writeFile(join(dir, 'made', 'b.parquet.jsonl'), spoolLine(2))
    await convertSpoolFile(join(dir, 'made', 'b.parquet.jsonl'), join(dir, 'made', 'b.parquet'), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 10, rowGroupBytes: 1 << 20 })
    const made = await readFile(join(dir, 'made', 'b.parquet'))
    const files = await spoolState(dir, {
      't/a.parquet.jsonl': spoolLine(1), // being converted when the process died
      't/a.parquet.tmp': 'PAR1 half written',
      't/b.parquet.jsonl': spoolLine(2), // converted and renamed; the JSON lines not yet deleted
      't/b.parquet': made,
      't/c.parquet': made, // waiting for its upload
      't/d.jsonl': '{"clientEvent":{}}\n' // a JSON-lines file: not the stage's
    })
    const placed: SpoolFile[] = []
    const s = stage(dir, placed)
    const others = await s.recover(files)
    expect(others.map((f) => f.key)).toEqual(['t/d.jsonl'])
    await s.drain()
    await s.close(0)
    expect(placed.map((f) => f.key).sort()).toEqual(['t/a.parquet', 't/b.parquet', 't/c.parquet'])
    expect((await readdir(join(dir, 'spool', 't'))).sort()).toEqual(['a.parquet', 'b.parquet', 'c.parquet', 'd.jsonl'])
    expect((await readParquet([join(dir, 'spool', 't', 'a.parquet')])).map((r) => r.clientEvent)).toEqual(['{"n":1}'])
  })

  it('a spool file that cannot be converted goes to quarantine as it is, and is counted', async () => {
    const dir = await tempDir()
    const files = await spoolState(dir, { 't/x.parquet.jsonl': 'not json\n' })
    const placed: SpoolFile[] = []
    const s = stage(dir, placed)
    await s.recover(files)
    await s.drain()
    await s.close(0)
    expect(placed).toEqual([])
    expect(s.stats.conversionQuarantined).toBe(1)
    expect(await readFile(join(dir, 'spool-quarantine', 't', 'x.parquet.jsonl'), 'utf8')).toBe('not json\n')
  })

  it('a conversion that runs past conversionTimeoutS is stopped and retried; after three, the file is set aside', async () => {
    const dir = await tempDir()
    const files = await spoolState(dir, { 't/x.parquet.jsonl': spoolLine(1).repeat(20000) })
    const s = new ParquetStage({
      spoolDir: join(dir, 'spool'),
      quarantineDir: join(dir, 'spool-quarantine'),
      convert: { compression: 'zstd', zstdLevel: 19, rowGroupRows: 100, rowGroupBytes: 1 << 20 },
      timeoutMs: 1,
      retryInitialMs: 10,
      retryMaxMs: 20,
      logger: silent,
      place: () => { throw new Error('never placed') },
      onSpoolBytes: () => {},
      onError: () => {}
    })
    await s.recover(files)
    await s.drain()
    await s.close(0)
    expect(s.stats).toMatchObject({ conversionFailures: 3, conversionQuarantined: 1, converted: 0 })
    expect(await listFiles(join(dir, 'spool'))).toEqual([])
  })

  it('SIGKILL during a conversion, then restart: no partial .parquet is ever visible, every acknowledged event is there once', async () => {
    const dir = await tempDir()
    const settings = join(dir, 'settings.json')
    // A slow zstd level and small files: conversions are long enough to be caught in the act.
    await writeFile(settings, JSON.stringify(fsDocument([{ name: 'all', path: 'events', format: 'parquet', flushEveryBytes: 1_500_000, zstdLevel: 19 }], { instanceId: 'crash' })))
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent({ keepAlive: true, maxSockets: 4 })
    const acked = new Set<number>()
    const spool = join(dir, 'data', 'state', 'all', 'spool')
    let next = 0
    // Shared with the sender loop, which stops once a conversion is seen.
    const seen = { converting: false }
    const pad = 'x'.repeat(900)
    const sender = (async () => {
      while (!seen.converting) {
        const ids = Array.from({ length: 50 }, () => next++)
        const status = await post(first.url, ids.map((id) => JSON.stringify({ id, pad })).join('\n'), agent).catch(() => 0)
        if (status === 200) for (const id of ids) acked.add(id)
        if (status === 0) return
      }
    })()
    const until = Date.now() + 60_000
    while (!seen.converting) {
      if (Date.now() > until) throw new Error('no conversion seen')
      seen.converting = (await listFiles(spool)).some((f) => f.endsWith('.parquet.tmp'))
      if (!seen.converting) await new Promise((resolve) => setTimeout(resolve, 5))
    }
    first.process.kill('SIGKILL')
    expect(await first.exited).toBe('SIGKILL')
    await sender
    agent.destroy()
    // Whatever is in the destination folder is whole: the reader reads every file.
    const visible = await parquetFiles(join(dir, 'out'))
    await readParquet(visible)
    expect((await listFiles(join(dir, 'out'))).filter((f) => !f.endsWith('.parquet'))).toEqual([])

    const second = await spawnServer(['--config', settings], dir)
    const agent2 = new Agent()
    expect(await post(second.url, JSON.stringify({ id: -1 }), agent2)).toBe(200)
    agent2.destroy()
    second.process.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    const ids = (await readParquet(await parquetFiles(join(dir, 'out')))).map((r) => JSON.parse(r.clientEvent).id as number)
    const counts = new Map<number, number>()
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
    expect([...acked].filter((id) => !counts.has(id))).toEqual([])
    expect([...counts].filter(([, n]) => n > 1)).toEqual([])
    expect(counts.has(-1)).toBe(true)
    expect(await listFiles(spool)).toEqual([])
  }, 120_000)
})

describe('JSON lines with zstd', () => {
  it('writes .jsonl.zst files, one frame per commit, that read back as the same lines', async () => {
    const dir = await tempDir()
    const app = await start({ baseDir: dir, document: fsDocument([{ name: 'all', path: 'events', compression: 'zstd' }]) })
    for (let i = 0; i < 4; i++) expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { i, s: 'é' } })).statusCode).toBe(200)
    await app.close()
    const [file] = await listFiles(join(dir, 'out'))
    expect(file).toMatch(/\/pq-1_all_0000000001\.jsonl\.zst$/)
    const data = await readFile(join(dir, 'out', file as string))
    expect(zstdFrames(data).frames.length).toBe(4)
    const lines = (await zstdDecompressAll(data)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((l) => l.clientEvent)).toEqual([0, 1, 2, 3].map((i) => ({ i, s: 'é' })))
  })

  it('repairs a torn zstd frame left by a crash: cut and kept aside', async () => {
    const dir = await tempDir()
    const settings = join(dir, 'settings.json')
    await writeFile(settings, JSON.stringify(fsDocument([{ name: 'all', path: 'events', compression: 'zstd' }], { instanceId: 'crash' })))
    const first = await spawnServer(['--config', settings], dir)
    const agent = new Agent()
    expect(await post(first.url, '{"n":1}', agent)).toBe(200)
    expect(await post(first.url, '{"n":2}', agent)).toBe(200)
    first.process.kill('SIGKILL')
    await first.exited
    const [file] = await listFiles(join(dir, 'out'))
    const path = join(dir, 'out', file as string)
    const { loadZstd } = await import('../plugins/files/zstd.js')
    const frame = (await loadZstd()).compress(Buffer.from('{"clientEvent":{"n":3}}\n'))
    await writeFile(path, Buffer.concat([await readFile(path), frame.subarray(0, frame.length - 3)]))

    const second = await spawnServer(['--config', settings], dir)
    second.process.kill('SIGTERM')
    await second.exited
    agent.destroy()
    const lines = (await zstdDecompressAll(await readFile(path))).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((l) => l.clientEvent.n)).toEqual([1, 2])
    expect(await readdir(join(dir, 'data', 'state', 'all', 'torn'))).toHaveLength(1)
  })

  it('a gzip member is not a zstd frame: the frame walker stops at it', () => {
    expect(zstdFrames(gzipSync('x')).complete).toBe(0)
  })
})
