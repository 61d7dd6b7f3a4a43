import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { link, mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import fc from 'fast-check'
import pino from 'pino'
import { checkSettings } from '../index.js'
import { FilesystemConnection } from '../plugins/filesystem/index.js'
import { encodeDigest, parseDigest, type DigestRecord } from '../plugins/files/digest-record.js'
import { convertSpoolFile } from '../plugins/files/parquet.js'
import { BIN, spawnServer } from './child-server.js'
import { describeIntegrity, keyPair, keysOf, readObject, verifyDocument } from './conformance/describe-integrity.js'
import { captureLogs, listFiles, start, tempDir } from './helpers.js'

describeIntegrity('filesystem', {
  connection: (_prefix, dir) => ({ type: 'filesystem', root: join(dir, 'store') }),
  reader: (_prefix, dir) => new FilesystemConnection({ root: join(dir, 'store') }, { name: 'reader', baseDir: dir })
})

function settings (dir: string, integrity: Record<string, unknown>, destination: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    server: { instanceId: 'test-1' },
    connections: { local: { type: 'filesystem', root: './out' } },
    destinations: [{ name: 'all', connection: 'local', path: 'events', integrity, ...destination }]
  }
}

describe('integrity settings', () => {
  it('check reports a signing key that is missing, not PEM, or not Ed25519, without echoing it', async () => {
    const dir = await tempDir()
    const { generateKeyPairSync } = await import('node:crypto')
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const cases: Array<[unknown, RegExp]> = [
      ['no-such-key.pem', /cannot read the signing key file .*no-such-key\.pem: ENOENT/],
      ['-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n', /expected an Ed25519 private key in PEM format/],
      [rsa, /expected an Ed25519 private key, got a rsa key/]
    ]
    for (const [signingKey, message] of cases) {
      const { problems } = await checkSettings(settings(dir, { enabled: true, signingKey }), dir)
      expect(problems).toHaveLength(1)
      expect(problems[0]?.path).toBe('/destinations/0/integrity/signingKey')
      expect(problems[0]?.message).toMatch(message)
      expect(problems[0]?.message).not.toContain('not really')
    }
    expect((await checkSettings(settings(dir, { enabled: true, signingKey: keyPair().privatePem }), dir)).problems).toEqual([])
    expect((await checkSettings(settings(dir, { signingKey: 'x' }), dir)).problems).toEqual([{ path: '/destinations/0/integrity/enabled', message: 'expected required property' }])
    expect((await checkSettings(settings(dir, { enabled: true }, { pathFormat: '%{topic}/.dss-integrity/%Y' }), dir)).problems)
      .toEqual([{ path: '/destinations/0/pathFormat', message: 'expected no ".dss-integrity" folder: it holds the digest records' }])
  })

  it('is accepted with every format and compression the files destination writes', async () => {
    const dir = await tempDir()
    const cases = [{ format: 'jsonl', compression: 'none' }, { compression: 'gzip' }, { compression: 'zstd' }, { format: 'parquet' }, { format: 'parquet', compression: 'snappy' }, { format: 'parquet', compression: 'none' }]
    for (const destination of cases) expect((await checkSettings(settings(dir, { enabled: true }, destination), dir)).problems, JSON.stringify(destination)).toEqual([])
  })

  it('`check` on the command line names the bad key; `verify` needs no private key, only the public one', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'settings.json'), JSON.stringify(settings(dir, { enabled: true, signingKey: '${EVS_TEST_SIGNING_KEY}' })))
    const run = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number, out: string }> =>
      await promisify(execFile)(process.execPath, [BIN, ...args], { cwd: dir, env: { ...process.env, ...env } })
        .then(({ stdout, stderr }) => ({ code: 0, out: stdout + stderr }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, out: err.stdout + err.stderr }))
    const bad = await run(['check', '--config', join(dir, 'settings.json')], { EVS_TEST_SIGNING_KEY: 'not a key' })
    expect(bad.code).toBe(1)
    expect(bad.out).toContain('/destinations/0/integrity/signingKey: cannot read the signing key file')
    const keys = keyPair()
    expect((await run(['check', '--config', join(dir, 'settings.json')], { EVS_TEST_SIGNING_KEY: keys.privatePem })).code).toBe(0)

    const app = await start({ document: settings(dir, { enabled: true, signingKey: keys.privatePem }), baseDir: dir })
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
    await app.close()
    await writeFile(join(dir, 'public.pem'), keys.publicPem)
    const verified = await run(['verify', '--config', join(dir, 'settings.json'), '--public-key', join(dir, 'public.pem')])
    expect(verified.out).toContain('warning: environment variable EVS_TEST_SIGNING_KEY is not set')
    expect(verified.out).toMatch(/destination all: OK\n {2}1 files, .*, 1 events verified, received .*; 3 records \(2 heads\) from 1 instance; signatures checked/)
    expect(verified.code).toBe(0)
    const unsigned = await run(['verify', '--config', join(dir, 'settings.json')])
    expect(unsigned.code).toBe(1)
    expect(unsigned.out).toMatch(/unchecked .*\n.*3 signed record\(s\) whose signatures were not checked: give the public key with --public-key/)
  })
})

describe('integrity heads and records', () => {
  it('writes a head every headIntervalS without traffic, logs each, and records what each file holds', async () => {
    const dir = await tempDir()
    const { stream, logs } = captureLogs()
    const app = await start({ document: settings(dir, { enabled: true, headIntervalS: 0.2 }), baseDir: dir, loggerInstance: pino({ level: 'info' }, stream) })
    await new Promise((resolve) => setTimeout(resolve, 700))
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: [{ n: 1 }, { n: 2 }] })).statusCode).toBe(200)
    await app.close()
    const heads = logs.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'integrity head')
    expect(heads.length).toBeGreaterThanOrEqual(4)
    expect(heads[0].integrityHead).toMatchObject({ destination: 'all', instanceId: 'test-1', seq: 1, reason: 'start' })
    expect(heads.slice(1, -1).every((h) => h.integrityHead.reason === 'interval')).toBe(true)
    expect(heads[heads.length - 1].integrityHead).toMatchObject({ reason: 'stop', files: 1 })
    const files = await listFiles(join(dir, 'out'))
    const data = files.find((f) => f.endsWith('.jsonl')) as string
    const digests = files.filter((f) => f.startsWith('events/.dss-integrity/all/test-1/'))
    expect(digests).toHaveLength(heads.length + 1)
    const records = await Promise.all(digests.map(async (f) => parseDigest(await readFile(join(dir, 'out', f))).record))
    const file = records.find((r) => r.type === 'file')
    const content = await readFile(join(dir, 'out', data))
    const lines = content.toString().trimEnd().split('\n').map((l) => JSON.parse(l))
    expect(file).toMatchObject({
      key: data,
      fileSeq: 1,
      bytes: content.length,
      lines: 2,
      firstAt: new Date(Date.parse(lines[0].serverTimestamp)).toISOString(),
      lastAt: new Date(Date.parse(lines[1].serverTimestamp)).toISOString()
    })
    expect(records.map((r) => r.seq)).toEqual(records.map((_r, i) => i + 1))
    const report = await verifyDocument(settings(dir, { enabled: true }), dir)
    expect(report.problems).toEqual([])
    expect(report.summary).toMatchObject({ files: 1, events: 2, signed: false })
  })

  it('reports files still being written as open, not as failures; an unsigned chain still detects a changed record', async () => {
    const dir = await tempDir()
    const app = await start({ document: settings(dir, { enabled: true }), baseDir: dir })
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
    const running = await verifyDocument(settings(dir, { enabled: true }), dir)
    expect(running.problems).toEqual([])
    expect(running.open.map((o) => o.key)).toEqual([(await listFiles(join(dir, 'out'))).find((f) => f.endsWith('.jsonl'))])
    await app.close()
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const [first, second] = await keysOf(reader, 'events/.dss-integrity/')
    const text = (await readObject(reader, first as string)).toString()
    await reader.put(first as string, Buffer.from(text.replace('"reason":"start"', '"reason":"stop" ')))
    expect((await verifyDocument(settings(dir, { enabled: true }), dir)).problems.map((p) => `${p.kind} ${p.key}`)).toEqual([`chain-broken ${second as string}`])
  })
})

describe('integrity: a lost state folder', () => {
  it('continues the chain after the last record in the store instead of overwriting it', async () => {
    const dir = await tempDir()
    const keys = keyPair()
    const document = settings(dir, { enabled: true, signingKey: keys.privatePem })
    const run = async (n: number): Promise<void> => {
      const app = await start({ document, baseDir: dir })
      expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n } })).statusCode).toBe(200)
      await app.close()
    }
    await run(1)
    await rm(join(dir, 'data', 'state'), { recursive: true })
    await run(2)
    const report = await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })
    expect(report.problems).toEqual([])
    expect(report.summary).toMatchObject({ files: 2, events: 2, records: 6 })
    expect(report.summary.notes.some((n) => n.includes('lost its local state and continued its chain from the store at record 4'))).toBe(true)
  })
})

describe('integrity: gzip files', () => {
  it('records the compressed bytes\' hash and the events they hold', async () => {
    const dir = await tempDir()
    const document = settings(dir, { enabled: true }, { compression: 'gzip' })
    const app = await start({ document, baseDir: dir })
    for (let i = 0; i < 5; i++) expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: [{ i }, { i, j: 1 }] })).statusCode).toBe(200)
    await app.close()
    const report = await verifyDocument(document, dir)
    expect(report.problems).toEqual([])
    expect(report.summary).toMatchObject({ files: 1, events: 10 })
    expect(report.summary.from).not.toBeNull()
  })
})

describe('integrity: key rotation', () => {
  it('records signed with an earlier key verify with its public key given too; without it they are named', async () => {
    const dir = await tempDir()
    const [first, second] = [keyPair(), keyPair()]
    for (const key of [first, second]) {
      const app = await start({ document: settings(dir, { enabled: true, signingKey: key.privatePem }), baseDir: dir })
      expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
      await app.close()
    }
    const document = settings(dir, { enabled: true })
    expect((await verifyDocument(document, dir, { publicKeys: [first.publicPem, second.publicPem] })).problems).toEqual([])
    const onlyNew = await verifyDocument(document, dir, { publicKeys: [second.publicPem] })
    expect(onlyNew.problems.map((p) => p.kind)).toEqual(['bad-signature', 'bad-signature', 'bad-signature'])
    expect(onlyNew.problems[0]?.message).toMatch(/signed with another key/)
  })
})

describe('integrity: time ranges', () => {
  it('--from and --to check the records written in the range, their link to the record before, and the files they name', async () => {
    const dir = await tempDir()
    const document = settings(dir, { enabled: true }, { flushEveryBytes: 0 })
    const run = async (from: number): Promise<void> => {
      const app = await start({ document, baseDir: dir })
      for (let i = from; i < from + 3; i++) expect((await app.inject({ method: 'POST', url: `/events/t/r${i}`, payload: { i } })).statusCode).toBe(200)
      await app.close()
    }
    await run(0)
    await new Promise((resolve) => setTimeout(resolve, 20))
    const between = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 20))
    await run(3)
    const first = (await verifyDocument(document, dir, { to: between })).summary
    const second = (await verifyDocument(document, dir, { from: between })).summary
    expect([first.events, second.events, (await verifyDocument(document, dir)).summary.events]).toEqual([3, 3, 6])
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const early = (await keysOf(reader, 'events/t/r0/'))[0] as string
    await reader.put(early, Buffer.from('{"forged":true}\n'))
    expect((await verifyDocument(document, dir, { from: between })).problems).toEqual([])
    expect((await verifyDocument(document, dir, { to: between })).problems.map((p) => `${p.kind} ${p.key}`)).toEqual([`altered ${early}`])
    // The first record of the range is checked against the one before it, outside the range.
    const digests = await keysOf(reader, 'events/.dss-integrity/')
    const records = await Promise.all(digests.map(async (k) => ({ k, r: parseDigest(await readObject(reader, k)).record })))
    const lastBefore = records.filter(({ r }) => Date.parse(r.at) < between).pop()?.k as string
    await reader.put(lastBefore, Buffer.from((await readObject(reader, lastBefore)).toString().replace('"stop"', '"interval"')))
    expect((await verifyDocument(document, dir, { from: between })).problems.map((p) => p.kind)).toEqual(['chain-broken'])
  })
})

describe('integrity: property', () => {
  it('any single-byte change anywhere in the data or the digest records is detected', async () => {
    const dir = await tempDir()
    const keys = keyPair()
    const document = settings(dir, { enabled: true, signingKey: keys.privatePem }, { flushEveryBytes: 300, compression: 'none' })
    const app = await start({ document, baseDir: dir })
    for (let i = 0; i < 8; i++) expect((await app.inject({ method: 'POST', url: `/events/t/r${i % 2}`, payload: { i, text: 'é'.repeat(i) } })).statusCode).toBe(200)
    await app.close()
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const keysList = await keysOf(reader)
    const contents = new Map<string, Buffer>()
    for (const key of keysList) contents.set(key, await readObject(reader, key))
    expect(keysList.some((k) => k.includes('.dss-integrity'))).toBe(true)
    expect((await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })).problems).toEqual([])
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...keysList), fc.nat(), fc.integer({ min: 1, max: 255 }),
      async (key, at, flip) => {
        const original = contents.get(key) as Buffer
        const changed = Buffer.from(original)
        const offset = at % changed.length
        changed[offset] = (changed[offset] as number) ^ flip
        await writeFile(reader.localPath(key), changed)
        try {
          const report = await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })
          expect(report.problems.length, `${key} byte ${offset}`).toBeGreaterThan(0)
          expect(report.problems.some((p) => p.key === key || p.kind === 'chain-broken'), `${key} byte ${offset}`).toBe(true)
        } finally {
          await writeFile(reader.localPath(key), original)
        }
      }), { numRuns: 150 })
  }, 120_000)
})

describe('integrity: Parquet files', () => {
  it('a file placed but not recorded when the server died is recorded at the next start, which says so', async () => {
    const dir = await tempDir()
    const keys = keyPair()
    const document = settings(dir, { enabled: true, signingKey: keys.privatePem }, { format: 'parquet' })
    const file = join(dir, 'settings.json')
    await writeFile(file, JSON.stringify(document))
    const first = await spawnServer(['--config', file], dir)
    for (let n = 0; n < 3; n++) expect((await fetch(`${first.url}/events/t/r`, { method: 'POST', body: JSON.stringify({ n }) })).status).toBe(200)
    first.process.kill('SIGKILL')
    await first.exited
    // What a crash between placing a converted file and recording it leaves: the file at its place
    // (a hard link) and still in the spool, with no record.
    const spool = join(dir, 'data', 'state', 'all', 'spool')
    const [spooled] = await listFiles(spool)
    expect(spooled).toMatch(/\.parquet\.jsonl$/)
    const key = (spooled as string).slice(0, -'.jsonl'.length)
    await convertSpoolFile(join(spool, spooled as string), join(spool, key), { compression: 'zstd', zstdLevel: 3, rowGroupRows: 100, rowGroupBytes: 1 << 20 })
    await unlink(join(spool, spooled as string))
    await mkdir(dirname(join(dir, 'out', key)), { recursive: true })
    await link(join(spool, key), join(dir, 'out', key))

    const second = await spawnServer(['--config', file], dir)
    second.process.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(await listFiles(spool)).toEqual([])
    const report = await verifyDocument(document, dir, { publicKeys: [keys.publicPem] })
    expect(report.problems).toEqual([])
    expect(report.summary).toMatchObject({ files: 1, events: 3 })
    expect(report.summary.notes.some((n) => n.includes('1 file(s) left open or in the spool completed'))).toBe(true)
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const records = await Promise.all((await keysOf(reader, 'events/.dss-integrity/')).map(async (k) => parseDigest(await readObject(reader, k)).record))
    expect(records.filter((r) => r.type === 'file').map((r) => r.key)).toEqual([key])
    expect(records.find((r) => r.type === 'head' && r.reason === 'recovered')).toMatchObject({ recovered: { files: 1, keys: [key] } })
  }, 60_000)

  it('a file recorded but still in the spool when the server died is placed again, not recorded twice', async () => {
    const dir = await tempDir()
    const document = settings(dir, { enabled: true }, { format: 'parquet' })
    const first = await start({ document, baseDir: dir })
    expect((await first.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })).statusCode).toBe(200)
    await first.close()
    const key = (await listFiles(join(dir, 'out'))).find((f) => f.endsWith('.parquet')) as string
    const spool = join(dir, 'data', 'state', 'all', 'spool')
    await mkdir(dirname(join(spool, key)), { recursive: true })
    await link(join(dir, 'out', key), join(spool, key))
    await (await start({ document, baseDir: dir })).close()
    expect(await listFiles(spool)).toEqual([])
    const report = await verifyDocument(document, dir)
    expect(report.problems).toEqual([])
    expect(report.summary).toMatchObject({ files: 1, events: 1 })
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const records = await Promise.all((await keysOf(reader, 'events/.dss-integrity/')).map(async (k) => parseDigest(await readObject(reader, k)).record))
    expect(records.filter((r) => r.type === 'file')).toHaveLength(1)
    // Nothing is left pending: the closing head says so.
    expect(records[records.length - 1]).toMatchObject({ type: 'head', reason: 'stop', openFrom: null })
  })

  it('verify counts the rows of each file: a record whose count is not the file\'s is named', async () => {
    const dir = await tempDir()
    const document = settings(dir, { enabled: true }, { format: 'parquet' })
    const app = await start({ document, baseDir: dir })
    expect((await app.inject({ method: 'POST', url: '/events/t/r', payload: [{ n: 1 }, { n: 2 }] })).statusCode).toBe(200)
    await app.close()
    expect((await verifyDocument(document, dir)).summary).toMatchObject({ files: 1, events: 2 })
    // An unsigned chain rewritten from the file's record on, with one row more: the links hold.
    const reader = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'r', baseDir: dir })
    const digestKeys = await keysOf(reader, 'events/.dss-integrity/')
    let prevHash: string | null = null
    let fileKey = ''
    for (const k of digestKeys) {
      const record: DigestRecord = { ...parseDigest(await readObject(reader, k)).record, prevHash }
      if (record.type === 'file') {
        record.lines++
        fileKey = record.key
      }
      const { bytes, hash } = encodeDigest(record, undefined)
      await reader.put(k, bytes)
      prevHash = hash
    }
    const report = await verifyDocument(document, dir)
    expect(report.problems.map((p) => `${p.kind} ${p.key} ${p.message}`)).toEqual([`altered ${fileKey} it holds 2 events, recorded 3`])
  })
})
