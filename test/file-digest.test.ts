import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { parquetWriteBuffer } from 'hyparquet-writer'
import { FileDigester, UNREADABLE_CONTENT } from '../plugins/files/file-digest.js'
import { convertSpoolFile, parquetSchema, spoolLineHead } from '../plugins/files/parquet.js'
import { loadZstd, zstdFrames } from '../plugins/files/zstd.js'
import { tempDir } from './helpers.js'

const line = (n: number, ts: string): string => `{"clientEvent":{"n":${n},"text":"a \\"serverTimestamp\\":\\"x\\"}"},"origAddress":"127.0.0.1","serverTimestamp":"${ts}"}\n`

describe('file digests', () => {
  it('hashes, counts lines and reads the first and last reception times, plain and gzip, across chunk boundaries', async () => {
    const dir = await tempDir()
    const lines = Array.from({ length: 20000 }, (_, i) => line(i, `2026-11-26T0${i < 10000 ? 1 : 2}:47:43.${String(i % 1000).padStart(3, '0')}+0100`))
    lines[0] = line(0, '2026-11-26T00:00:00.001+0100')
    lines[lines.length - 1] = line(1, '2026-11-26T03:59:59.999-0030')
    const plain = Buffer.from(lines.join('').repeat(10)) // > 4 MiB: several reads
    const gz = Buffer.concat([gzipSync(plain.subarray(0, 1000000)), gzipSync(plain.subarray(1000000))])
    await writeFile(join(dir, 'a.jsonl'), plain)
    await writeFile(join(dir, 'a.jsonl.gz'), gz)
    const digester = new FileDigester()
    try {
      const a = await digester.digest({ path: join(dir, 'a.jsonl'), content: 'jsonl', md5: true })
      expect(a).toEqual({
        bytes: plain.length,
        sha256: createHash('sha256').update(plain).digest('hex'),
        md5: createHash('md5').update(plain).digest('base64'),
        lines: 200000,
        firstAt: '2026-11-25T23:00:00.001Z',
        lastAt: '2026-11-26T04:29:59.999Z'
      })
      const [b, c] = await Promise.all([
        digester.digest({ path: join(dir, 'a.jsonl.gz'), content: 'jsonl.gz', md5: false }),
        digester.digest({ path: join(dir, 'a.jsonl'), content: 'jsonl', md5: false })
      ])
      expect(b).toEqual({ bytes: gz.length, sha256: createHash('sha256').update(gz).digest('hex'), lines: 200000, firstAt: a.firstAt, lastAt: a.lastAt })
      expect(c.sha256).toBe(a.sha256)
      await expect(digester.digest({ path: join(dir, 'missing'), content: 'jsonl', md5: false })).rejects.toMatchObject({ code: 'ENOENT' })
      await writeFile(join(dir, 'bad.gz'), Buffer.from('not gzip at all'))
      await expect(digester.digest({ path: join(dir, 'bad.gz'), content: 'jsonl.gz', md5: false })).rejects.toThrow(/decompress/)
    } finally {
      await digester.close()
    }
    await expect(digester.digest({ path: join(dir, 'a.jsonl'), content: 'jsonl', md5: false })).rejects.toThrow(/closed/)
  })

  it('a pool hashes several files at once, each whole; without lines it only hashes', async () => {
    const dir = await tempDir()
    const bodies = Array.from({ length: 6 }, (_, i) => Buffer.alloc(3 * 1024 * 1024 + i, i + 1))
    await Promise.all(bodies.map(async (body, i) => await writeFile(join(dir, `${i}`), body)))
    const pool = new FileDigester({ workers: 3, lowPriority: false })
    try {
      const digests = await Promise.all(bodies.map(async (_b, i) => await pool.digest({ path: join(dir, `${i}`), content: 'jsonl.gz', md5: false, lines: false })))
      expect(digests).toEqual(bodies.map((body) => ({ bytes: body.length, sha256: createHash('sha256').update(body).digest('hex'), lines: 0, firstAt: null, lastAt: null })))
    } finally {
      await pool.close()
    }
  })

  it('.jsonl.zst: lines and times from the decoded frames, a frame cut by a read boundary included; a torn stream is unreadable', async () => {
    const dir = await tempDir()
    const zstd = await loadZstd()
    // Random text compresses little: the file spans several 4 MiB reads, and frames straddle them.
    const lines = Array.from({ length: 30000 }, (_, i) => line(i, `2026-11-26T01:00:${String(i % 60).padStart(2, '0')}.000+0000`).replace('"n":', `"r":"${randomBytes(150).toString('hex')}","n":`))
    lines[lines.length - 1] = line(1, '2026-11-26T03:00:00.500+0000')
    const frames: Buffer[] = []
    for (let i = 0; i < lines.length; i += 700) frames.push(Buffer.from(zstd.compress(Buffer.from(lines.slice(i, i + 700).join('')), 1)))
    const data = Buffer.concat(frames)
    expect(data.length).toBeGreaterThan(4 * 1024 * 1024) // the worker reads 4 MiB at a time
    expect(zstdFrames(data).frames).toHaveLength(frames.length)
    await writeFile(join(dir, 'a.jsonl.zst'), data)
    await writeFile(join(dir, 'torn.jsonl.zst'), data.subarray(0, data.length - 10))
    const digester = new FileDigester()
    try {
      expect(await digester.digest({ path: join(dir, 'a.jsonl.zst'), content: 'jsonl.zst', md5: false })).toEqual({
        bytes: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        lines: 30000,
        firstAt: '2026-11-26T01:00:00.000Z',
        lastAt: '2026-11-26T03:00:00.500Z'
      })
      await expect(digester.digest({ path: join(dir, 'torn.jsonl.zst'), content: 'jsonl.zst', md5: false }))
        .rejects.toMatchObject({ code: UNREADABLE_CONTENT, message: expect.stringMatching(/not a whole zstd stream/) })
    } finally {
      await digester.close()
    }
    // The same code on the calling thread, as verify runs it for a few small files.
    const inline = new FileDigester({ workers: 0 })
    const [zst, torn] = await Promise.allSettled([
      inline.digest({ path: join(dir, 'a.jsonl.zst'), content: 'jsonl.zst', md5: false }),
      inline.digest({ path: join(dir, 'torn.jsonl.zst'), content: 'jsonl.zst', md5: false })
    ])
    expect(zst).toMatchObject({ status: 'fulfilled', value: { lines: 30000, sha256: createHash('sha256').update(data).digest('hex') } })
    expect(torn).toMatchObject({ status: 'rejected', reason: { code: UNREADABLE_CONTENT } })
    await inline.close()
  })

  it('.parquet: rows from the footer, the lowest and highest serverTimestamp from the statistics, or from the column without them', async () => {
    const dir = await tempDir()
    // Out of order (a clock step back): the lowest and highest, not the first and last.
    const stamps = ['2026-11-26T02:00:00.000+0000', '2026-11-26T01:59:59.250+0000', '2026-11-26T02:30:00.125+0000', '2026-11-26T02:10:00.000+0000']
    const spool = stamps.map((ts, n) => `${spoolLineHead('t', 'r').toString()}"clientEvent":{"n":${n}},"origAddress":"1.2.3.4","serverTimestamp":"${ts}"}\n`).join('')
    await writeFile(join(dir, 'a.parquet.jsonl'), spool.repeat(5))
    const digester = new FileDigester()
    try {
      for (const compression of ['zstd', 'gzip'] as const) {
        const path = join(dir, `a-${compression}.parquet`)
        // Row groups of 3 rows: the statistics of several groups are combined.
        await convertSpoolFile(join(dir, 'a.parquet.jsonl'), path, { compression, zstdLevel: 3, rowGroupRows: 3, rowGroupBytes: 1 << 20 })
        const body = await readFile(path)
        expect(await digester.digest({ path, content: 'parquet', md5: true })).toEqual({
          bytes: body.length,
          sha256: createHash('sha256').update(body).digest('hex'),
          md5: createHash('md5').update(body).digest('base64'),
          lines: 20,
          firstAt: '2026-11-26T01:59:59.250Z',
          lastAt: '2026-11-26T02:30:00.125Z'
        })
      }
      // Another writer, without statistics: the column itself is read.
      const schema = parquetSchema()
      const timestamps = [1795650000000n, 1795640000000n, 1795660000000n]
      const bare = parquetWriteBuffer({
        schema: [{ ...schema[0], num_children: 1 } as typeof schema[0], schema[1] as typeof schema[0]],
        columnData: [{ name: 'serverTimestamp', data: timestamps }],
        statistics: false
      })
      await writeFile(join(dir, 'bare.parquet'), new Uint8Array(bare))
      expect(await digester.digest({ path: join(dir, 'bare.parquet'), content: 'parquet', md5: false })).toMatchObject({
        lines: 3,
        firstAt: new Date(1795640000000).toISOString(),
        lastAt: new Date(1795660000000).toISOString()
      })
      await writeFile(join(dir, 'bad.parquet'), 'PAR1 not really')
      await expect(digester.digest({ path: join(dir, 'bad.parquet'), content: 'parquet', md5: false })).rejects.toMatchObject({ code: UNREADABLE_CONTENT })
    } finally {
      await digester.close()
    }
  })
})
