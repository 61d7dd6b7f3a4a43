import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { FileDigester } from '../plugins/files/file-digest.js'
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
      const a = await digester.digest({ path: join(dir, 'a.jsonl'), gzip: false, md5: true })
      expect(a).toEqual({
        bytes: plain.length,
        sha256: createHash('sha256').update(plain).digest('hex'),
        md5: createHash('md5').update(plain).digest('base64'),
        lines: 200000,
        firstAt: '2026-11-25T23:00:00.001Z',
        lastAt: '2026-11-26T04:29:59.999Z'
      })
      const [b, c] = await Promise.all([
        digester.digest({ path: join(dir, 'a.jsonl.gz'), gzip: true, md5: false }),
        digester.digest({ path: join(dir, 'a.jsonl'), gzip: false, md5: false })
      ])
      expect(b).toEqual({ bytes: gz.length, sha256: createHash('sha256').update(gz).digest('hex'), lines: 200000, firstAt: a.firstAt, lastAt: a.lastAt })
      expect(c.sha256).toBe(a.sha256)
      await expect(digester.digest({ path: join(dir, 'missing'), gzip: false, md5: false })).rejects.toMatchObject({ code: 'ENOENT' })
      await writeFile(join(dir, 'bad.gz'), Buffer.from('not gzip at all'))
      await expect(digester.digest({ path: join(dir, 'bad.gz'), gzip: true, md5: false })).rejects.toThrow(/decompress/)
    } finally {
      await digester.close()
    }
    await expect(digester.digest({ path: join(dir, 'a.jsonl'), gzip: false, md5: false })).rejects.toThrow(/closed/)
  })

  it('a pool hashes several files at once, each whole; without lines it only hashes', async () => {
    const dir = await tempDir()
    const bodies = Array.from({ length: 6 }, (_, i) => Buffer.alloc(3 * 1024 * 1024 + i, i + 1))
    await Promise.all(bodies.map(async (body, i) => await writeFile(join(dir, `${i}`), body)))
    const pool = new FileDigester({ workers: 3, lowPriority: false })
    try {
      const digests = await Promise.all(bodies.map(async (_b, i) => await pool.digest({ path: join(dir, `${i}`), gzip: true, md5: false, lines: false })))
      expect(digests).toEqual(bodies.map((body) => ({ bytes: body.length, sha256: createHash('sha256').update(body).digest('hex'), lines: 0, firstAt: null, lastAt: null })))
    } finally {
      await pool.close()
    }
  })
})
