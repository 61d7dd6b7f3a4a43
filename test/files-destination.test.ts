import { describe, expect, it } from 'vitest'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { validate } from '../core/validation.js'
import { FilesDestination, FilesDestinationSchema } from '../plugins/files/index.js'
import { FilesystemConnection } from '../plugins/filesystem/index.js'
import { fsSettings, listFiles, onCleanup, readEvents, start, tempDir } from './helpers.js'

async function server (destination: Record<string, unknown>, clock?: { t: number }) {
  const dir = await tempDir()
  const app = await start({ document: fsSettings(destination), baseDir: dir, ...(clock !== undefined ? { now: () => clock.t } : {}) })
  return { app, dir, out: join(dir, 'out') }
}

const post = async (app: Awaited<ReturnType<typeof server>>['app'], url: string, payload: unknown) => {
  const res = await app.inject({ method: 'POST', url, payload: payload as object })
  expect(res.statusCode).toBe(200)
  return res
}

describe('files destination layout', () => {
  it.each([
    [{ partitioningPeriod: 'HOUR' }, 'events/tp/rk/2026/03/17/19'],
    [{ partitioningPeriod: 'DAY' }, 'events/tp/rk/2026/03/17'],
    [{ partitioningPeriod: 'MONTH' }, 'events/tp/rk/2026/03'],
    [{ folderByTopic: false }, 'events/rk/2026/03/17/19'],
    [{ folderByRoutingKey: false, partitioningPeriod: 'DAY' }, 'events/tp/2026/03/17'],
    [{ path: 'a/b/', pathFormat: 'dt=%Y-%M-%D/h=%H/%{topic}_%{routingKey}' }, 'a/b/dt=2026-03-17/h=19/tp_rk'],
    [{ path: '' }, 'tp/rk/2026/03/17/19']
  ])('%j writes under %s', async (options, folder) => {
    const clock = { t: Date.UTC(2026, 2, 17, 19, 15, 30, 609) }
    const { app, out } = await server(options, clock)
    await post(app, '/events/tp/rk', { a: 1 })
    const files = await listFiles(out)
    expect(files).toHaveLength(1)
    expect(files[0]).toBe(`${folder}/test-1_all_0000000001.jsonl`)
  })

  it('starts a new file in a new folder when the period changes, and seals the old one', async () => {
    const clock = { t: Date.UTC(2026, 2, 17, 19, 59, 59, 990) }
    const { app, out } = await server({}, clock)
    await post(app, '/events/t/r', { n: 1 })
    clock.t += 20 // 20:00:00.010
    await post(app, '/events/t/r', { n: 2 })
    const events = await readEvents(out)
    expect(events.map((e) => [e.record.clientEvent.n, e.file])).toEqual([
      [1, 'events/t/r/2026/03/17/19/test-1_all_0000000001.jsonl'],
      [2, 'events/t/r/2026/03/17/20/test-1_all_0000000002.jsonl']
    ])
  })

  it('rolls files by flushEveryBytes, never splitting a line', async () => {
    const { app, out } = await server({ flushEveryBytes: 600 })
    for (let i = 0; i < 10; i++) await post(app, '/events/t/r', { i, pad: 'x'.repeat(100) })
    const files = await listFiles(out)
    expect(files.length).toBeGreaterThanOrEqual(3)
    const events = await readEvents(out)
    expect(events.map((e) => e.record.clientEvent.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('with flushEveryBytes 0, completes a file after every write (DSS: flush after each message)', async () => {
    const { app, out } = await server({ flushEveryBytes: 0 })
    for (let i = 0; i < 3; i++) await post(app, '/events/t/r', { i })
    expect(await listFiles(out)).toHaveLength(3)
  })

  it('rolls files by flushEveryS', async () => {
    const clock = { t: Date.UTC(2026, 2, 17, 19, 0, 0) }
    const { app, out } = await server({ flushEveryS: 60 }, clock)
    await post(app, '/events/t/r', { n: 1 })
    clock.t += 30_000
    await post(app, '/events/t/r', { n: 2 })
    clock.t += 31_000
    await new Promise((resolve) => setTimeout(resolve, 1300)) // the maintenance tick
    await post(app, '/events/t/r', { n: 3 })
    const files = await listFiles(out)
    expect(files).toEqual([
      'events/t/r/2026/03/17/19/test-1_all_0000000001.jsonl',
      'events/t/r/2026/03/17/19/test-1_all_0000000002.jsonl'
    ])
    const events = await readEvents(out)
    expect(events.map((e) => [e.file.slice(-7, -6), e.record.clientEvent.n])).toEqual([['1', 1], ['1', 2], ['2', 3]])
  })

  it('keeps at most maxActiveFiles files being written, sealing the least recently used', async () => {
    const { app, out } = await server({ maxActiveFiles: 2 })
    await post(app, '/events/t/a', { n: 1 })
    await post(app, '/events/t/b', { n: 2 })
    await post(app, '/events/t/a', { n: 3 }) // a is now the most recent
    await post(app, '/events/t/c', { n: 4 }) // seals b
    await post(app, '/events/t/b', { n: 5 }) // b again: a new file; seals a
    await app.close()
    const files = (await listFiles(out)).map((f) => f.replace(/\/\d{4}\/\d\d\/\d\d\/\d\d\//, '/'))
    expect(files).toEqual([
      'events/t/a/test-1_all_0000000001.jsonl',
      'events/t/b/test-1_all_0000000002.jsonl',
      'events/t/b/test-1_all_0000000004.jsonl',
      'events/t/c/test-1_all_0000000003.jsonl'
    ])
  })

  it('keeps at most maxOpenFiles descriptors open, reopening files instead of starting new ones', async () => {
    const { app, out } = await server({ maxOpenFiles: 3 })
    let maxOpen = 0
    for (let round = 0; round < 4; round++) {
      // Concurrent requests to 10 partitions: one commit touches more files than the cap.
      await Promise.all(Array.from({ length: 10 }, async (_, k) => await post(app, `/events/t/rk${k}`, { round, k })))
      const stats = app.eventServer.destinations.get('all')?.stats?.() as { openFiles: number }
      maxOpen = Math.max(maxOpen, stats.openFiles)
    }
    expect(maxOpen).toBeLessThanOrEqual(3)
    const files = await listFiles(out)
    expect(files).toHaveLength(10)
    const events = await readEvents(out)
    expect(events).toHaveLength(40)
    for (const { file, record } of events) expect(file.split('/')[2]).toBe(`rk${record.clientEvent.k}`)
  })

  it('compresses with gzip: every file is valid gzip holding the lines in order', async () => {
    const { app, out } = await server({ compression: 'gzip' })
    for (let i = 0; i < 5; i++) await post(app, '/events/t/r', [{ i: 2 * i }, { i: 2 * i + 1 }])
    const files = await listFiles(out)
    expect(files).toHaveLength(1)
    expect(files[0]).toMatch(/\.jsonl\.gz$/)
    const events = await readEvents(out)
    expect(events.map((e) => e.record.clientEvent.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('counts flushEveryBytes after compression', async () => {
    const { app, out } = await server({ compression: 'gzip', flushEveryBytes: 6000 })
    // 23 kB of lines that compress to about 2 kB: one file, where uncompressed counting makes four.
    for (let i = 0; i < 20; i++) await post(app, '/events/t/r', { i, pad: 'x'.repeat(1000) })
    await app.close()
    expect(await listFiles(out)).toHaveLength(1)
    expect(await readEvents(out)).toHaveLength(20)
  })

  it('never reuses a file name: sequence numbers survive restarts', async () => {
    const dir = await tempDir()
    for (let run = 0; run < 3; run++) {
      const app = await start({ document: fsSettings(), baseDir: dir })
      await app.inject({ method: 'POST', url: '/events/t/r', payload: { run } })
      await app.close()
    }
    const files = await listFiles(join(dir, 'out'))
    expect(files.map((f) => f.slice(-17))).toEqual(['_0000000001.jsonl', '_0000000002.jsonl', '_0000000003.jsonl'])
  })

  it('does not overwrite an existing file when its state folder was lost', async () => {
    const dir = await tempDir()
    const first = await start({ document: fsSettings(), baseDir: dir })
    await first.inject({ method: 'POST', url: '/events/t/r', payload: { n: 1 } })
    await first.close()
    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'data', 'state'), { recursive: true })
    const second = await start({ document: fsSettings(), baseDir: dir })
    await second.inject({ method: 'POST', url: '/events/t/r', payload: { n: 2 } })
    await second.close()
    const events = await readEvents(join(dir, 'out'))
    expect(events.map((e) => [e.record.clientEvent.n, e.file.slice(-7, -6)])).toEqual([[1, '1'], [2, '2']])
  })

  it('flushes and closes every file on close: the last line is complete', async () => {
    const { app, out } = await server({})
    await Promise.all(Array.from({ length: 20 }, async (_, i) => await post(app, `/events/t/r${i % 4}`, { i })))
    await app.close()
    const files = await listFiles(out)
    expect(files).toHaveLength(4)
    for (const file of files) expect((await readFile(join(out, file), 'utf8')).endsWith('}\n')).toBe(true)
    expect(await readEvents(out)).toHaveLength(20)
  })
})

describe('files destination accept()', () => {
  /** A files destination over a filesystem connection, driven directly with a clock of the test's. */
  async function destination (clock: { t: number }) {
    const dir = await tempDir()
    const connection = new FilesystemConnection({ root: join(dir, 'out') }, { name: 'local', baseDir: dir })
    const sealed: number[] = []
    const checked = validate(FilesDestinationSchema, { connection: 'local', path: 'events' })
    if (!checked.ok) throw new Error(JSON.stringify(checked.problems))
    const logger = pino({ level: 'silent' })
    const d = new FilesDestination(checked.value, {
      name: 'all',
      baseDir: dir,
      stateDir: join(dir, 'state'),
      instanceId: 'test-1',
      timeZone: 'UTC',
      logger,
      now: () => clock.t,
      connection: (name) => name === 'local' ? connection : undefined,
      metrics: {
        counter: (name) => ({ add: () => { if (name === 'evs_files_completed_total') sealed.push(clock.t) }, value: 0 }),
        histogram: () => ({ observe: () => {} }),
        gauge: () => {},
        error: () => {}
      }
    })
    await mkdir(join(dir, 'state'), { recursive: true })
    await d.open()
    onCleanup(async () => await d.close())
    return { d, out: join(dir, 'out'), sealed }
  }

  const event = (receivedAt: number, n: number) => ({ topic: 't', routingKey: 'r', receivedAt, line: Buffer.from(`{"n":${n}}\n`) })

  it('places every event of a batch in the period of its own receivedAt, and seals each period on time', async () => {
    const clock = { t: Date.UTC(2026, 2, 17, 19, 59, 59, 990) }
    const { d, out, sealed } = await destination(clock)
    await d.accept([event(clock.t, 1), event(Date.UTC(2026, 2, 17, 20, 0, 0, 5), 2), event(clock.t, 3)])
    expect(await listFiles(out)).toEqual([
      'events/t/r/2026/03/17/19/test-1_all_0000000001.jsonl',
      'events/t/r/2026/03/17/20/test-1_all_0000000002.jsonl'
    ])
    expect(await readFile(join(out, 'events/t/r/2026/03/17/19/test-1_all_0000000001.jsonl'), 'utf8')).toBe('{"n":1}\n{"n":3}\n')
    // In the next hour, the 19h file is sealed by the periodic check; the 20h one stays open.
    clock.t = Date.UTC(2026, 2, 17, 20, 0, 1)
    const until = Date.now() + 5000
    while (sealed.length === 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50))
    expect(sealed).toHaveLength(1)
    expect(d.stats()).toMatchObject({ activeFiles: 1 })
  })
})
