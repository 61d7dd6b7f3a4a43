// npm run bench: dss-event-server against two bare-Fastify references, same requests, paired rounds.
//
//   npm run bench                          every scenario and both sweeps (about 12 minutes)
//   BENCH_QUICK=1 npm run bench            the same, short (about 3 minutes): to try the tooling
//   npm run bench -- --target URL          the same requests against a server already running
//                    [--target-pid PID]    its peak RSS (VmHWM) from /proc
//                    [--target-out DIR]    where it writes JSON lines: count them and check ids
//
// Environment: BENCH_ONLY (scenario ids, e.g. "a,c"; "s3" adds the S3 scenario), BENCH_SWEEPS
// ("0": none; "connections", "routing-keys"), BENCH_ROUNDS (5), BENCH_SECONDS (5 per measurement),
// BENCH_SWEEP_SECONDS (4), BENCH_QUERY ("0": no query scenario; else 1 GB of .jsonl and 256 MB each of
// .jsonl.gz and .jsonl.zst, 128 MB of .parquet, see bench/query.mjs), BENCH_LOAD (wrk|autocannon),
// BENCH_WRK_THREADS (1), BENCH_PROFILE=1 (a
// --cpu-prof profile of the server per scenario in bench/results/profiles/), BENCH_KEEP=1 (keep the
// work folders: settings, wrk scripts, output).
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { cpus, hostname, totalmem, tmpdir, platform, release, loadavg } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { gunzipSync } from 'node:zlib'
import { SCENARIOS, SHAPES, TARGET_SCENARIOS, CONNECTION_SWEEP, ROUTING_KEY_SWEEP, scenarioName } from './scenarios.mjs'
import { pickLoadGenerator, writeWrkScript, runWrk, runAutocannon } from './load.mjs'
import { folderSizes, IdLedger, RUN_STRIDE, scanFolder, scanLines } from './verify.mjs'
import { sweepCharts } from './charts.mjs'
import { queryTable, runQueryBench } from './query.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')
const resultsDir = join(here, 'results')

const { values: cli } = parseArgs({
  options: {
    target: { type: 'string' },
    'target-pid': { type: 'string' },
    'target-out': { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }
})
if (cli.help) {
  const text = await readFile(fileURLToPath(import.meta.url), 'utf8')
  console.log(text.split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n').split('\nEnvironment')[0])
  process.exit(0)
}

const env = process.env
const number = (name, fallback) => {
  if (env[name] === undefined || env[name] === '') return fallback
  const n = Number(env[name])
  if (!(n > 0)) throw new Error(`${name} must be a positive number, got ${JSON.stringify(env[name])}`)
  return n
}
const QUICK = env.BENCH_QUICK === '1'
const ROUNDS = number('BENCH_ROUNDS', QUICK ? 2 : 5)
const SECONDS = number('BENCH_SECONDS', QUICK ? 2 : 5)
const WARM_SECONDS = QUICK ? 1 : 2
const SWEEP_SECONDS = number('BENCH_SWEEP_SECONDS', QUICK ? 2 : 4)
const THREADS = number('BENCH_WRK_THREADS', 1)
const ONLY = env.BENCH_ONLY?.split(',').map((s) => s.trim()).filter((s) => s !== '')
const SWEEPS = env.BENCH_SWEEPS === '0' ? [] : (env.BENCH_SWEEPS?.split(',') ?? ['connections', 'routing-keys'])
const PROFILE = env.BENCH_PROFILE === '1'
const KEEP = env.BENCH_KEEP === '1'

let target
if (cli.target !== undefined) {
  const url = new URL(cli.target)
  if (url.protocol !== 'http:') throw new Error(`--target: expected an http:// URL, got ${cli.target}`)
  const prefix = url.pathname === '/' ? '/events/generic/' : url.pathname.replace(/\/?$/, '/')
  target = { base: url.origin, prefix, pid: cli['target-pid'] === undefined ? undefined : Number(cli['target-pid']), out: cli['target-out'] }
}

const loadGenerator = pickLoadGenerator()

// ---------------------------------------------------------------------------------------------
// Processes

// Every process this run started, stopped if the run ends early.
const children = new Set()
process.on('exit', () => { for (const child of children) child.kill('SIGKILL') })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))

function spawnListening (args, options = {}) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
  children.add(child)
  child.on('exit', () => children.delete(child))
  let output = ''
  child.stdout.on('data', (c) => { output += c })
  child.stderr.on('data', (c) => { output += c })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)))
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start within 30 s: ${output}`)), 30000)
    const check = () => {
      const m = /(?:listening|Server listening at) (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (m) { clearTimeout(timer); resolve(m[1]) }
    }
    child.stdout.on('data', check)
    exited.then((code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${output}`)) })
  })
  return { child, url, exited, output: () => output }
}

async function stop (process_) {
  process_.child.kill('SIGTERM')
  const timer = setTimeout(() => process_.child.kill('SIGKILL'), 120_000)
  const code = await process_.exited
  clearTimeout(timer)
  return code
}

/** Peak RSS since the last reset, in MB; resetting needs a process this user owns. */
async function peakRssMb (pid) {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
  } catch {
    return undefined
  }
}
async function resetPeakRss (pid) {
  try { await writeFile(`/proc/${pid}/clear_refs`, '5') } catch {}
}

/**
 * CPU seconds a process used so far (user and system, threads that ended included) and those of
 * its main thread (the JavaScript thread; the rest is libuv's pool, which runs the fdatasyncs and
 * file writes, and V8's helpers): where a server's time per event goes.
 */
async function cpuSeconds (pid) {
  const ticks = async (path) => {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const text = await readFile(path, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 }
  }
  try {
    const [all, main] = await Promise.all([ticks(`/proc/${pid}/stat`), ticks(`/proc/${pid}/task/${pid}/stat`)])
    return { user: all.user, system: all.system, mainUser: main.user, mainSystem: main.system }
  } catch {
    return undefined
  }
}

/** CPU microseconds per event between two cpuSeconds() readings. */
function cpuPerEvent (before, after, events) {
  if (before === undefined || after === undefined || events === 0) return undefined
  const us = (s) => Math.round(s / events * 1e6 * 10) / 10
  const main = (after.mainUser - before.mainUser) + (after.mainSystem - before.mainSystem)
  const total = (after.user - before.user) + (after.system - before.system)
  return { total: us(total), main: us(main), mainSystem: us(after.mainSystem - before.mainSystem), others: us(total - main), othersSystem: us((after.system - before.system) - (after.mainSystem - before.mainSystem)) }
}

async function startServer (dir, name, destination, s3) {
  const connection = s3 === undefined
    ? { type: 'filesystem', root: './out' }
    : { type: 's3', bucket: 'bench', endpoint: s3, forcePathStyle: true, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }
  const settings = {
    server: { instanceId: `bench-${name}` },
    connections: { store: connection },
    destinations: [{ name: 'all', connection: 'store', path: 'events', ...destination }]
  }
  await writeFile(join(dir, 'settings.json'), JSON.stringify(settings, null, 2))
  const profile = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${join(resultsDir, 'profiles')}`, `--cpu-prof-name=server-${name}.cpuprofile`] : []
  const server = spawnListening([...profile, join(root, 'bin', 'dss-event-server.js'), 'start', '--config', join(dir, 'settings.json'), '--host', '127.0.0.1', '--port', '0'], { cwd: dir })
  return { process: server, url: await server.url, pid: server.child.pid }
}

async function startReference (mode) {
  const reference = spawnListening([join(here, 'reference.mjs'), mode])
  return { process: reference, url: await reference.url, pid: reference.child.pid }
}

async function stats (url) {
  const res = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(10_000) })
  return await res.json()
}

/**
 * The server's own count of events answered with a 2xx once it has settled, and the request bytes
 * it still counts in flight then (0 unless a request's bytes were never released).
 */
async function settledAccepted (url) {
  let last
  for (let i = 0; i < 40; i++) {
    const s = await stats(url)
    const now = { accepted: s.events.accepted, inFlightBytes: s.inFlightBytes, writer: s.destinations?.all?.details }
    if (last !== undefined && now.accepted === last.accepted && now.inFlightBytes === last.inFlightBytes && (now.inFlightBytes === 0 || i >= 10)) return now
    last = now
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return last
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** One side of a comparison: a server, a reference or the target. */
function side (label, url, pid, ledger) {
  return { label, url, pid, ledger, runs: 0, sentEvents: 0, okEvents: 0, bad: 0, peakRssMb: 0 }
}

const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && !Number.isNaN(x)).sort((a, b) => a - b)
  if (s.length === 0) return undefined
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** One load run of `seconds` against a side; ids are new for every run. */
async function measure (s, load, seconds) {
  const idBase = s.runs++ * RUN_STRIDE
  if (s.pid !== undefined) await resetPeakRss(s.pid)
  const cpuBefore = s.pid === undefined ? undefined : await cpuSeconds(s.pid)
  const common = { url: s.url, connections: load.connections, seconds, idBase }
  const r = loadGenerator.name === 'wrk'
    ? await runWrk({ ...common, script: load.script, threads: THREADS })
    : await runAutocannon({ ...common, shape: load.shape, pathPrefix: load.pathPrefix, routingKeys: load.routingKeys })
  const events = load.shape.events
  if (s.ledger !== undefined) r.sentPerThread.forEach((n, tid) => s.ledger.add(idBase, tid, n * events))
  s.sentEvents += r.sentPerThread.reduce((a, b) => a + b, 0) * events
  s.okEvents += r.ok * events
  s.bad += r.bad
  const cpu = cpuPerEvent(cpuBefore, s.pid === undefined ? undefined : await cpuSeconds(s.pid), r.ok * events)
  const peak = s.pid === undefined ? undefined : await peakRssMb(s.pid)
  if (peak !== undefined) s.peakRssMb = Math.max(s.peakRssMb, peak)
  return {
    eventsPerS: (r.ok * events) / r.durationS,
    requestsPerS: r.ok / r.durationS,
    p50Ms: r.latencyMs.p50,
    p99Ms: r.latencyMs.p99,
    maxMs: r.latencyMs.max,
    peakRssMb: peak,
    cpuUsPerEvent: cpu,
    ok: r.ok,
    bad: r.bad,
    durationS: r.durationS
  }
}

const fmt = (n, digits = 0) => n === undefined || Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const ms = (n) => fmt(n, n < 10 ? 2 : 1)
const roundLine = (label, r) => `${label.padEnd(18)} ${fmt(r.eventsPerS).padStart(10)} events/s ${fmt(r.requestsPerS).padStart(8)} req/s   p50 ${ms(r.p50Ms).padStart(6)}  p99 ${ms(r.p99Ms).padStart(7)}  max ${ms(r.maxMs).padStart(7)} ms   peak RSS ${r.peakRssMb === undefined ? '–' : r.peakRssMb} MB${r.cpuUsPerEvent === undefined ? '' : `   CPU ${r.cpuUsPerEvent.total} µs/event (JS thread ${r.cpuUsPerEvent.main}, of it kernel ${r.cpuUsPerEvent.mainSystem}; other threads ${r.cpuUsPerEvent.others})`}${r.bad > 0 ? `   ${r.bad} failed` : ''}`

function summary (rounds) {
  return {
    eventsPerS: median(rounds.map((r) => r.eventsPerS)),
    requestsPerS: median(rounds.map((r) => r.requestsPerS)),
    p50Ms: median(rounds.map((r) => r.p50Ms)),
    p99Ms: median(rounds.map((r) => r.p99Ms)),
    worstP99Ms: Math.max(...rounds.map((r) => r.p99Ms)),
    maxMs: Math.max(...rounds.map((r) => r.maxMs)),
    peakRssMb: rounds.some((r) => r.peakRssMb !== undefined) ? Math.max(...rounds.map((r) => r.peakRssMb ?? 0)) : undefined,
    cpuUsPerEvent: rounds.some((r) => r.cpuUsPerEvent !== undefined)
      ? Object.fromEntries(['total', 'main', 'mainSystem', 'others', 'othersSystem'].map((k) => [k, median(rounds.map((r) => r.cpuUsPerEvent?.[k]))]))
      : undefined
  }
}

/** Paired rounds: every side once per round, the order rotated each round. */
async function pairedRounds (sides, load, indent = '  ') {
  for (const s of sides) await measure(s, load, WARM_SECONDS)
  const rounds = Object.fromEntries(sides.map((s) => [s.label, []]))
  for (let r = 0; r < ROUNDS; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length])
    for (const s of order) {
      const result = await measure(s, load, SECONDS)
      rounds[s.label].push(result)
      console.log(`${indent}round ${r + 1}/${ROUNDS}  ${roundLine(s.label, result)}`)
    }
  }
  return rounds
}

// ---------------------------------------------------------------------------------------------
// Checking what was written

async function outputOf (dir, s3, ledger) {
  if (s3 === undefined) return await scanFolder(join(dir, 'out'), ledger)
  const { S3Client, ListObjectsV2Command, GetObjectCommand } = await import('@aws-sdk/client-s3')
  const client = new S3Client({ endpoint: s3, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' })
  const totals = { lines: 0, unknown: 0, files: 0 }
  let token
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: 'bench', ContinuationToken: token }))
    for (const item of page.Contents ?? []) {
      const res = await client.send(new GetObjectCommand({ Bucket: 'bench', Key: item.Key }))
      const data = Buffer.from(await res.Body.transformToByteArray())
      totals.files++
      scanLines(item.Key.endsWith('.gz') ? gunzipSync(data) : data, ledger, totals)
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  client.destroy()
  return totals
}

/**
 * What a check of the output found. `settled` has the server's own count of events answered 2xx
 * (none for a peer): requests in flight when a load run stopped are answered to nobody, so the
 * clients' count can be lower.
 */
function check ({ written, ledger, settled, s, unique }) {
  const failures = []
  const ids = unique ? ledger.tally() : undefined
  const accepted = settled?.accepted
  if (s.bad > 0) failures.push(`${s.bad} requests failed or were refused`)
  if (settled !== undefined) {
    if (written.lines !== accepted) failures.push(`${accepted} events acknowledged by the server but ${written.lines} lines written`)
    if (s.okEvents > accepted) failures.push(`the clients saw ${s.okEvents} acknowledged events, the server counts ${accepted}`)
    if (settled.inFlightBytes !== 0) failures.push(`${settled.inFlightBytes} bytes still counted in flight with no request running`)
  } else if (written.lines < s.okEvents) {
    failures.push(`${s.okEvents} events acknowledged but ${written.lines} lines written`)
  }
  if (ids !== undefined) {
    if (ids.duplicated > 0) failures.push(`${ids.duplicated} events written twice or more`)
    if (written.unknown > 0) failures.push(`${written.unknown} lines without an id that was sent`)
    // Only requests never answered may be missing: those in flight when a load run stopped.
    const unanswered = s.sentEvents - s.okEvents
    if (ids.missing > unanswered) failures.push(`${ids.missing} events missing, more than the ${unanswered} never answered`)
  }
  return { lines: written.lines, files: written.files, accepted, acknowledgedByClients: s.okEvents, sent: s.sentEvents, ...(ids ?? {}), failures }
}

// ---------------------------------------------------------------------------------------------
// Scenarios and sweeps

async function workDir (name) {
  return await mkdtemp(join(tmpdir(), `evs-bench-${name}-`))
}

async function loadFor (dir, name, shapeName, connections, routingKeys = 1, pathPrefix = '/events/generic/rk-') {
  const shape = SHAPES[shapeName]
  const spec = { shape, pathPrefix, routingKeys }
  const script = loadGenerator.name === 'wrk' ? await writeWrkScript(dir, name, spec) : undefined
  return { ...spec, connections, script }
}

async function runScenario (scenario) {
  const dir = await workDir(scenario.id)
  const shape = SHAPES[scenario.shape]
  let s3
  if (scenario.s3) {
    await mkdir(join(dir, 's3'))
    s3 = spawnListening([join(here, 's3rver.mjs'), join(dir, 's3')])
  }
  const [server, raw, parse] = await Promise.all([
    target === undefined ? startServer(dir, scenario.id, scenario.destination, s3 === undefined ? undefined : await s3.url) : undefined,
    startReference('raw'),
    startReference('parse')
  ])
  const ledger = shape.unique ? new IdLedger() : undefined
  const main = target === undefined
    ? side('dss-event-server', server.url, server.pid, ledger)
    : side('target', target.base, target.pid, ledger)
  const sides = [main, side('bare', raw.url, raw.pid), side('bare+parse', parse.url, parse.pid)]
  const load = await loadFor(dir, scenario.id, scenario.shape, scenario.connections, scenario.routingKeys, target === undefined ? undefined : `${target.prefix}rk-`)
  let maxOpenFiles = 0
  const poll = server !== undefined && scenario.destination.maxOpenFiles !== undefined
    ? setInterval(() => { stats(server.url).then((s) => { maxOpenFiles = Math.max(maxOpenFiles, s.destinations.all.details.openFiles) }, () => {}) }, 1000)
    : undefined
  const before = target?.out === undefined ? undefined : await folderSizes(target.out)
  let rounds
  try {
    rounds = await pairedRounds(sides, load)
  } finally {
    if (poll !== undefined) clearInterval(poll)
  }
  let verification
  if (server !== undefined) {
    const settled = await settledAccepted(server.url)
    const code = await stop(server.process)
    const written = await outputOf(dir, s3 === undefined ? undefined : await s3.url, ledger)
    verification = check({ written, ledger, settled, s: main, unique: shape.unique })
    if (code !== 0) verification.failures.push(`the server exited with ${code}:\n${server.process.output().slice(-2000)}`)
    verification.writer = settled.writer
    verification.serverWarnings = warnings(server.process.output())
    if (scenario.destination.maxOpenFiles !== undefined && maxOpenFiles > scenario.destination.maxOpenFiles) verification.failures.push(`${maxOpenFiles} files open, over the cap of ${scenario.destination.maxOpenFiles}`)
  } else if (target.out !== undefined) {
    verification = check({ written: await settledFolder(target.out, ledger, before), ledger, settled: undefined, s: main, unique: shape.unique })
  }
  await Promise.all([stop(raw.process), stop(parse.process), s3 === undefined ? undefined : stop(s3)])
  if (KEEP) console.log(`  kept ${dir}`)
  else await rm(dir, { recursive: true, force: true })

  const ratio = (other) => median(rounds[main.label].map((r, i) => r.eventsPerS / rounds[other][i].eventsPerS))
  return {
    scenario,
    sides: Object.fromEntries(sides.map((s) => [s.label, { ...summary(rounds[s.label]), peakRssMb: s.pid === undefined ? undefined : s.peakRssMb }])),
    ratios: { bare: ratio('bare'), 'bare+parse': ratio('bare+parse') },
    rounds,
    maxOpenFiles: poll === undefined ? undefined : maxOpenFiles,
    verification
  }
}

/** The server's warnings and errors (pino levels 40 and up), counted by message. */
function warnings (output) {
  const counts = {}
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue
    try {
      const entry = JSON.parse(line)
      if (entry.level >= 40) counts[entry.msg] = (counts[entry.msg] ?? 0) + 1
    } catch {}
  }
  return counts
}

/** A peer writes in its own time: count its output until it stops growing for two seconds. */
async function settledFolder (dir, ledger, since) {
  let last = -1
  for (let i = 0; i < 60; i++) {
    const { lines } = await scanFolder(dir, undefined, since)
    if (lines === last) break
    last = lines
    await new Promise((resolve) => setTimeout(resolve, 2000))
  }
  return await scanFolder(dir, ledger, since)
}

async function connectionSweep () {
  const dir = await workDir('sweep-connections')
  const [server, raw] = await Promise.all([
    target === undefined ? startServer(dir, 'sweep-connections', {}) : undefined,
    startReference('raw')
  ])
  const ledger = new IdLedger()
  const main = target === undefined ? side('dss-event-server', server.url, server.pid, ledger) : side('target', target.base, target.pid, ledger)
  const bare = side('bare', raw.url, raw.pid)
  const points = []
  const warm = await loadFor(dir, 'warm', 'single', 50, 1, target === undefined ? undefined : `${target.prefix}rk-`)
  await measure(main, warm, WARM_SECONDS)
  await measure(bare, warm, WARM_SECONDS)
  for (const [i, connections] of CONNECTION_SWEEP.entries()) {
    const load = { ...warm, connections }
    const point = { connections }
    for (const s of i % 2 === 0 ? [main, bare] : [bare, main]) {
      point[s.label] = await measure(s, load, SWEEP_SECONDS)
      console.log(`  ${String(connections).padStart(5)} conns  ${roundLine(s.label, point[s.label])}`)
    }
    points.push(point)
  }
  let verification
  if (server !== undefined) {
    const settled = await settledAccepted(server.url)
    const code = await stop(server.process)
    verification = check({ written: await scanFolder(join(dir, 'out'), ledger), ledger, settled, s: main, unique: true })
    if (code !== 0) verification.failures.push(`the server exited with ${code}`)
  }
  await stop(raw.process)
  if (!KEEP) await rm(dir, { recursive: true, force: true })
  return { points, mainLabel: main.label, verification }
}

async function routingKeySweep () {
  const points = []
  const failures = []
  let mainLabel = 'target'
  const destination = SCENARIOS.find((s) => s.id === 'f').destination
  for (const routingKeys of ROUTING_KEY_SWEEP) {
    const dir = await workDir(`sweep-keys-${routingKeys}`)
    const server = target === undefined ? await startServer(dir, `sweep-keys-${routingKeys}`, destination) : undefined
    const ledger = new IdLedger()
    const main = target === undefined ? side('dss-event-server', server.url, server.pid, ledger) : side('target', target.base, target.pid, ledger)
    mainLabel = main.label
    const load = await loadFor(dir, `keys-${routingKeys}`, 'single', 50, routingKeys, target === undefined ? undefined : `${target.prefix}rk-`)
    await measure(main, load, WARM_SECONDS)
    const result = await measure(main, load, SWEEP_SECONDS)
    console.log(`  ${String(routingKeys).padStart(6)} keys  ${roundLine(main.label, result)}`)
    const point = { routingKeys, [main.label]: { ...result, peakRssMb: main.pid === undefined ? undefined : main.peakRssMb } }
    if (server !== undefined) {
      const settled = await settledAccepted(server.url)
      const code = await stop(server.process)
      point.verification = check({ written: await scanFolder(join(dir, 'out'), ledger), ledger, settled, s: main, unique: true })
      if (code !== 0) point.verification.failures.push(`the server exited with ${code}`)
      failures.push(...point.verification.failures.map((f) => `${routingKeys} keys: ${f}`))
    }
    points.push(point)
    if (!KEEP) await rm(dir, { recursive: true, force: true })
  }
  return { points, mainLabel, failures }
}

// ---------------------------------------------------------------------------------------------
// Reporting

function targets (results) {
  const by = Object.fromEntries(results.map((r) => [r.scenario.id, r]))
  const out = []
  const add = (name, ok, detail) => out.push({ name, met: ok, detail })
  const server = (id) => by[id].sides['dss-event-server']
  if (by.a) {
    add('single events, fsync (a): at least 0.8 of bare Fastify', by.a.ratios.bare >= 0.8, fmt(by.a.ratios.bare, 2))
    add('single events, fsync (a): p99 under 10 ms in every round', server('a').worstP99Ms < 10, `worst round ${ms(server('a').worstP99Ms)} ms; rounds ${by.a.rounds['dss-event-server'].map((r) => ms(r.p99Ms)).join(', ')}`)
  }
  if (by.b) add('single events, durability write (b): at least 0.95 of bare Fastify', by.b.ratios.bare >= 0.95, fmt(by.b.ratios.bare, 2))
  if (by.c) add('arrays of 100, fsync (c): at least 0.8 of bare Fastify + JSON.parse', by.c.ratios['bare+parse'] >= 0.8, fmt(by.c.ratios['bare+parse'], 2))
  if (by.c && by.d) {
    const r = server('d').eventsPerS / server('c').eventsPerS
    add('arrays of 100: durability write (d) not slower than fsync (c)', r >= 1, `${fmt(r, 2)} (medians of different rounds: noisy)`)
  }
  if (by.e) add('gzip NDJSON (e): at least 0.8 of bare Fastify + gunzip + JSON.parse', by.e.ratios['bare+parse'] >= 0.8, fmt(by.e.ratios['bare+parse'], 2))
  if (by.f && by.a) {
    const r = server('f').eventsPerS / server('a').eventsPerS
    add('5,000 routing keys, commit log (f): at least 0.6 of (a)', r >= 0.6, `${fmt(r, 2)}; at most ${by.f.maxOpenFiles} files open (cap ${by.f.scenario.destination.maxOpenFiles})`)
  }
  const rss = results.map((r) => `(${r.scenario.id}) ${r.sides['dss-event-server'].peakRssMb}`)
  add('peak RSS under 250 MB in every scenario', results.every((r) => r.sides['dss-event-server'].peakRssMb < 250), `${rss.join(', ')} MB`)
  const lost = results.filter((r) => r.verification.failures.length > 0)
  add('no line lost or duplicated', lost.length === 0, lost.length === 0
    ? results.map((r) => `(${r.scenario.id}) ${fmt(r.verification.lines)} lines${r.verification.distinct !== undefined ? ', ids checked' : ''}`).join('; ')
    : lost.map((r) => `(${r.scenario.id}) ${r.verification.failures.join('; ')}`).join(' | '))
  return out
}

/** The query targets of the issue, from bench/query.mjs's report. */
function queryGoals (report) {
  const of = (format) => report.results.find((r) => r.format === format)
  const out = []
  const jsonl = of('jsonl')
  if (jsonl !== undefined) out.push({ name: `query over ${fmt(jsonl.dataMB)} MB of .jsonl: at least 250 MB/s`, met: jsonl.queryMBps >= 250, detail: `${fmt(jsonl.queryMBps)} MB/s; ${jsonl.ratioToGrep} of grep -c's speed (a floor: grep cannot tell a field from a substring)` })
  const gz = of('jsonl.gz')
  if (gz !== undefined) out.push({ name: 'query over .jsonl.gz: faster than zcat | grep -c', met: gz.ratioToGrep > 1, detail: `${gz.ratioToGrep} times as fast (${fmt(gz.queryMBps)} MB/s of lines)` })
  return out
}

function scenarioTable (results, mainLabel) {
  const head = ['scenario', 'side', 'events/s', 'requests/s', 'p50 ms', 'p99 ms', 'worst p99 ms', 'max ms', 'peak RSS MB', 'CPU µs/event (JS thread)', 'vs bare', 'vs bare+parse']
  const rows = [head]
  for (const r of results) {
    for (const label of [mainLabel, 'bare', 'bare+parse']) {
      const s = r.sides[label]
      rows.push([
        label === mainLabel ? `(${r.scenario.id}) ${scenarioName(r.scenario, target !== undefined)}` : '',
        label,
        fmt(s.eventsPerS), fmt(s.requestsPerS), ms(s.p50Ms), ms(s.p99Ms), ms(s.worstP99Ms), ms(s.maxMs),
        s.peakRssMb === undefined ? '–' : String(s.peakRssMb),
        s.cpuUsPerEvent === undefined ? '–' : `${s.cpuUsPerEvent.total} (${s.cpuUsPerEvent.main})`,
        label === mainLabel ? fmt(r.ratios.bare, 2) : '',
        label === mainLabel ? fmt(r.ratios['bare+parse'], 2) : ''
      ])
    }
  }
  return markdownTable(rows)
}

function markdownTable (rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => String(row[i]).length)))
  const line = (row) => `| ${row.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`
  return [line(rows[0]), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.slice(1).map(line)].join('\n')
}

function sweepTables (sweeps) {
  const out = []
  if (sweeps.connections) {
    const { points, mainLabel } = sweeps.connections
    out.push(markdownTable([
      ['connections', `${mainLabel} events/s`, `${mainLabel} p99 ms`, 'bare events/s', 'bare p99 ms', 'ratio'],
      ...points.map((p) => [p.connections, fmt(p[mainLabel].eventsPerS), ms(p[mainLabel].p99Ms), fmt(p.bare.eventsPerS), ms(p.bare.p99Ms), fmt(p[mainLabel].eventsPerS / p.bare.eventsPerS, 2)])
    ]))
  }
  if (sweeps.routingKeys) {
    const { points, mainLabel } = sweeps.routingKeys
    out.push(markdownTable([
      ['routing keys', `${mainLabel} events/s`, 'p99 ms', 'max ms', 'peak RSS MB'],
      ...points.map((p) => [fmt(p.routingKeys), fmt(p[mainLabel].eventsPerS), ms(p[mainLabel].p99Ms), ms(p[mainLabel].maxMs), p[mainLabel].peakRssMb ?? '–'])
    ]))
  }
  return out.join('\n\n')
}

// ---------------------------------------------------------------------------------------------
// Main

const machine = { hostname: hostname(), cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), os: `${platform()} ${release()}`, node: process.version }
const loadBefore = loadavg()
const started = Date.now()
const wanted = SCENARIOS.filter((s) => (ONLY === undefined ? !s.optional : ONLY.includes(s.id)) && (target === undefined || TARGET_SCENARIOS.includes(s.id)))
const runSweeps = ONLY === undefined || env.BENCH_SWEEPS !== undefined ? SWEEPS : []
const estimate = wanted.length * (3 * WARM_SECONDS + 3 * ROUNDS * SECONDS + 8) +
  (runSweeps.includes('connections') ? 2 * WARM_SECONDS + 2 * CONNECTION_SWEEP.length * SWEEP_SECONDS + 8 : 0) +
  (runSweeps.includes('routing-keys') ? ROUTING_KEY_SWEEP.length * (WARM_SECONDS + SWEEP_SECONDS + 6) : 0)

console.log(`dss-event-server benchmark${target === undefined ? '' : ` against ${cli.target}`}: ${ROUNDS} paired rounds of ${SECONDS} s per scenario${QUICK ? ' (BENCH_QUICK)' : ''}, about ${Math.ceil(estimate / 60)} min`)
console.log(`load generator: ${loadGenerator.name} ${loadGenerator.version}${loadGenerator.name === 'wrk' ? `, ${THREADS} thread(s)` : ` (${loadGenerator.why})`}`)
if (loadGenerator.name === 'autocannon' && loadGenerator.why !== 'BENCH_LOAD=autocannon') console.log('  autocannon runs in this Node.js process and takes more CPU from the server than wrk: ratios to the references are lower with it')
console.log(`machine: ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, Node.js ${machine.node}; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`)
if (loadBefore[0] > machine.cores * 0.5) console.log(`  warning: the machine is busy (load average ${loadBefore[0].toFixed(1)} on ${machine.cores} cores): figures will move`)
if (target !== undefined) {
  console.log(`target: requests go to ${target.base}${target.prefix}rk-N; peak RSS ${target.pid === undefined ? 'not measured (--target-pid PID)' : `of pid ${target.pid} (VmHWM: reset per run only if this user owns it)`}; ` +
    (target.out === undefined ? 'lines written not checked: the bench cannot see where the target writes (--target-out DIR if it writes JSON lines there)' : `lines counted in ${target.out} (no server-side count: events in flight when a run stops may be written without an acknowledgement)`))
}

const results = []
for (const scenario of wanted) {
  console.log(`\n(${scenario.id}) ${scenarioName(scenario, target !== undefined)}`)
  const result = await runScenario(scenario)
  const main = target === undefined ? 'dss-event-server' : 'target'
  const v = result.verification
  console.log(`  median: ${fmt(result.sides[main].eventsPerS)} events/s, p99 ${ms(result.sides[main].p99Ms)} ms (worst round ${ms(result.sides[main].worstP99Ms)}); ` +
    `vs bare ${fmt(result.ratios.bare, 2)}, vs bare+parse ${fmt(result.ratios['bare+parse'], 2)}` +
    (v === undefined ? '; output not checked' : `; ${fmt(v.lines)} lines written for ${fmt(v.accepted ?? v.acknowledgedByClients)} acknowledged${v.distinct !== undefined ? `, ${fmt(v.distinct)} distinct ids, ${v.duplicated} twice` : ''}${v.failures.length > 0 ? `  FAILED: ${v.failures.join('; ')}` : ''}`))
  if (v?.writer !== undefined) console.log(`  server: ${fmt(v.writer.commits)} commits, ${fmt(v.writer.syncs)} syncs, ${fmt(v.writer.filesOpened)} files opened, ${fmt(v.writer.filesSealed)} sealed`)
  // Slow writes switch the server's file writes to the thread pool for a minute: worth knowing when reading a figure.
  const warned = Object.entries(v?.serverWarnings ?? {})
  for (const [message, count] of warned.slice(0, 5)) console.log(`  server warned${count > 1 ? ` ${count} times` : ''}: ${message}`)
  if (warned.length > 5) console.log(`  server warned ${warned.length - 5} more different messages (bench/results/latest.json)`)
  results.push(result)
}

const sweeps = {}
if (runSweeps.includes('connections')) {
  console.log('\nsweep: connections (single events, fsync)')
  sweeps.connections = await connectionSweep()
}
if (runSweeps.includes('routing-keys')) {
  console.log('\nsweep: routing keys (single events, 50 connections, commit log)')
  sweeps.routingKeys = await routingKeySweep()
}

// Reading the trail back (`query`), on local files this bench writes itself: not for --target.
let query
if (target === undefined && env.BENCH_QUERY !== '0') {
  console.log('\nquery: a field filter matching 1% of events, against grep -c of the same value (bench/query.mjs)')
  query = await runQueryBench({
    mb: QUICK ? 128 : 1024,
    gzMb: QUICK ? 64 : 256,
    zstMb: QUICK ? 64 : 256,
    parquetMb: QUICK ? 32 : 128,
    rounds: QUICK ? 1 : 3,
    log: (text) => console.log(`  ${text}`)
  })
}

const mainLabel = target === undefined ? 'dss-event-server' : 'target'
const goals = target === undefined && results.length > 0 ? targets(results) : []
const minutes = (Date.now() - started) / 60000
const loadAfter = loadavg()
const method = `${loadGenerator.name} ${loadGenerator.version} on the same machine${loadGenerator.name === 'wrk' ? ` (${THREADS} thread)` : ''}; ` +
  `per scenario a warm-up, then ${ROUNDS} rounds of ${SECONDS} s, each round every side once in rotated order; figures are medians of the rounds, ratios the medians of the rounds' ratios; ` +
  `load average ${loadBefore[0].toFixed(1)} before, ${loadAfter[0].toFixed(1)} after; ${fmt(minutes, 1)} min.`
const prefix = target === undefined ? '' : 'target-'
const subtitle = `${target === undefined ? '' : `${cli.target}, `}${machine.cores} cores, Node.js ${machine.node}, ${loadGenerator.name}, ${new Date().toISOString().slice(0, 10)}`
const svgs = sweepCharts(sweeps, prefix, subtitle)

const failures = [
  ...results.flatMap((r) => (r.verification?.failures ?? []).map((f) => `(${r.scenario.id}) ${f}`)),
  ...(sweeps.connections?.verification?.failures ?? []).map((f) => `connection sweep: ${f}`),
  ...(sweeps.routingKeys?.failures ?? []).map((f) => `routing-key sweep: ${f}`)
]
const busy = Math.max(loadBefore[0], loadAfter[0]) > machine.cores * 0.5
const md = [
  busy ? `**The machine was busy during this run (load average ${loadBefore[0].toFixed(1)} before, ${loadAfter[0].toFixed(1)} after, on ${machine.cores} cores): its figures say little about the server.**` : '',
  results.length > 0 ? scenarioTable(results, mainLabel) : '',
  goals.length > 0 ? goals.map((g) => `- ${g.met ? 'met' : '**not met**'}: ${g.name}: ${g.detail}`).join('\n') : '',
  sweepTables(sweeps),
  query === undefined ? '' : `Query (${query.filter}); baseline: ${query.baseline}. MB/s: MB of lines per second; ratio: baseline time / query time.\n\n${queryTable(query)}\n\n${queryGoals(query).map((g) => `- ${g.met ? 'met' : '**not met**'}: ${g.name}: ${g.detail}`).join('\n')}`,
  Object.keys(svgs).map((f) => `![${f}](${f})`).join('\n'),
  `Machine: ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, ${machine.os}, Node.js ${machine.node}. Load: ${method}`
].filter((s) => s !== '').join('\n\n') + '\n'

console.log(`\n${results.length > 0 ? scenarioTable(results, mainLabel) : ''}`)
if (Object.keys(sweeps).length > 0) console.log(`\n${sweepTables(sweeps)}`)
if (query !== undefined) console.log(`\n${queryTable(query)}\n${queryGoals(query).map((g) => `${g.met ? 'met    ' : 'NOT MET'}  ${g.name}: ${g.detail}`).join('\n')}`)
if (goals.length > 0) console.log(`\n${goals.map((g) => `${g.met ? 'met    ' : 'NOT MET'}  ${g.name}: ${g.detail}`).join('\n')}`)

const report = {
  date: new Date().toISOString(),
  machine,
  loadGenerator,
  target: target === undefined ? undefined : { url: cli.target, pid: target.pid, out: target.out },
  settings: { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, warmSeconds: WARM_SECONDS, sweepSeconds: SWEEP_SECONDS, wrkThreads: THREADS },
  loadAverage: { before: loadBefore, after: loadAfter, busy },
  minutes,
  scenarios: results.map(({ scenario, ...r }) => ({ id: scenario.id, name: scenarioName(scenario, target !== undefined), shape: scenario.shape, connections: scenario.connections, routingKeys: scenario.routingKeys, destination: scenario.destination, ...r })),
  sweeps,
  query,
  targets: [...goals, ...(query === undefined ? [] : queryGoals(query))],
  failures
}
await mkdir(resultsDir, { recursive: true })
const base = target === undefined ? 'latest' : 'target'
await writeFile(join(resultsDir, `${base}.json`), JSON.stringify(report, null, 2) + '\n')
await writeFile(join(resultsDir, `${base}.md`), md)
for (const [file, svg] of Object.entries(svgs)) await writeFile(join(resultsDir, file), svg)
console.log(`\nwritten: bench/results/${base}.{json,md}${Object.keys(svgs).map((f) => `, bench/results/${f}`).join('')} (${fmt(minutes, 1)} min)`)
if (failures.length > 0) {
  console.error(`\nFAILED:\n${failures.join('\n')}`)
  process.exit(1)
}
