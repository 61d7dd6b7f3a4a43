// node bench/integrity.mjs (after npm run build): ingestion with the integrity trail on against the
// same server with it off, in the same run, then `verify` throughput on what was written.
// Environment: BENCH_ROUNDS (5), BENCH_SCALE (1), BENCH_ONLY (e.g. "b"),
// BENCH_FLUSH_BYTES (16 MiB: files complete, and are hashed, while the load runs),
// BENCH_AA (1: integrity off on both sides, to see how far apart two identical servers measure).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { DSS_EVENT } from './scenarios.mjs'
import { startServerProcess } from './server-process.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SCALE = Number(process.env.BENCH_SCALE ?? 1)
const ONLY = process.env.BENCH_ONLY?.split(',')
const FLUSH_BYTES = Number(process.env.BENCH_FLUSH_BYTES ?? 16 * 1024 * 1024)
const AA = process.env.BENCH_AA === '1'

const ARRAY_100 = `[${Array.from({ length: 100 }, (_, i) => JSON.stringify({ ...DSS_EVENT, seq: i })).join(',')}]`
const SCENARIOS = [
  { id: 'a', name: '1 event/request, 50 conns, fsync', connections: 50, amount: 60000, eventsPerRequest: 1, body: JSON.stringify(DSS_EVENT) },
  { id: 'b', name: 'arrays of 100, 20 conns, fsync', connections: 20, amount: 4000, eventsPerRequest: 100, body: ARRAY_100 }
]

function load (url, scenario, amount) {
  const started = performance.now()
  let last = started
  return new Promise((resolve, reject) => {
    const instance = autocannon({
      url,
      connections: scenario.connections,
      pipelining: 1,
      amount,
      timeout: 30,
      requests: [{ method: 'POST', path: '/events/generic/rk-1', headers: { 'content-type': 'application/json' }, body: scenario.body }]
    }, (err, result) => err ? reject(err) : resolve({ ok: result['2xx'], bad: result.non2xx + result.errors + result.timeouts, eventsPerS: result['2xx'] * scenario.eventsPerRequest / ((last - started) / 1000) }))
    instance.on('response', () => { last = performance.now() })
  })
}

async function setup (scenario, integrity) {
  const dir = await mkdtemp(join(tmpdir(), `evs-bench-integrity-${scenario.id}-`))
  const { privateKey } = generateKeyPairSync('ed25519')
  await writeFile(join(dir, 'signing.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const settings = {
    server: { instanceId: `bench-${integrity ? 'on' : 'off'}`, logLevel: 'info' },
    connections: { local: { type: 'filesystem', root: './out' } },
    destinations: [{
      name: 'all',
      connection: 'local',
      path: 'events',
      flushEveryBytes: FLUSH_BYTES,
      ...(integrity ? { integrity: { enabled: true, signingKey: 'signing.pem' } } : {})
    }]
  }
  await mkdir(join(dir, 'out'))
  await writeFile(join(dir, 'settings.json'), JSON.stringify(settings))
  const server = startServerProcess(dir)
  return { dir, settings, server, url: await server.url, acknowledged: 0 }
}

// CPU seconds the server process used so far, all threads (its digest worker included): less
// sensitive than events/s to what else the machine runs.
async function cpuSeconds (pid) {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })

async function stop (side) {
  const started = performance.now()
  side.server.child.kill('SIGTERM')
  const code = await side.server.exited
  if (code !== 0) throw new Error(`server exited with ${code}: ${side.server.output().slice(-2000)}`)
  return (performance.now() - started) / 1000
}

async function runScenario (scenario) {
  const off = await setup(scenario, false)
  const on = await setup(scenario, !AA)
  const amount = Math.max(10, Math.round(scenario.amount * SCALE))
  const warm = Math.max(10, Math.round(amount / 10))
  for (const side of [off, on]) side.acknowledged += (await load(side.url, scenario, warm)).ok * scenario.eventsPerRequest
  const rounds = { off: [], on: [] }
  const cpu = { off: [], on: [] }
  const run = async (side, into) => {
    const before = await cpuSeconds(side.server.child.pid)
    const result = await load(side.url, scenario, amount)
    if (result.bad > 0) throw new Error(`${result.bad} requests not acknowledged`)
    side.acknowledged += result.ok * scenario.eventsPerRequest
    into.push(result.eventsPerS)
    cpu[side === on ? 'on' : 'off'].push((await cpuSeconds(side.server.child.pid) - before) / (result.ok * scenario.eventsPerRequest) * 1e6)
  }
  // Back-to-back pairs in alternating order, so that a shared machine's drift weighs on both alike.
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) { await run(off, rounds.off); await run(on, rounds.on) } else { await run(on, rounds.on); await run(off, rounds.off) }
  }
  // Shutting down includes what the trail still had to do: hash the last files, store their records.
  const stopS = { off: await stop(off), on: await stop(on) }
  const { verifyTrail } = await import(join(root, 'dist', 'index.js'))
  // Twice: the first run also loads the plugins; the page cache holds the files both times.
  const verifyS = []
  let report = { problems: [], summary: { events: on.acknowledged, bytes: 0, files: 0 } }
  for (let i = 0; i < (AA ? 0 : 2); i++) {
    const started = performance.now()
    report = (await verifyTrail({ document: on.settings, baseDir: on.dir, origin: 'bench' }, { now: Date.now() })).reports[0]
    verifyS.push((performance.now() - started) / 1000)
  }
  const failures = []
  if (report.problems.length > 0) failures.push(`verify found problems: ${JSON.stringify(report.problems.slice(0, 3))}`)
  if (report.summary.events !== on.acknowledged) failures.push(`${on.acknowledged} events acknowledged, ${report.summary.events} verified`)
  await rm(off.dir, { recursive: true, force: true })
  await rm(on.dir, { recursive: true, force: true })
  const ratios = rounds.on.map((v, i) => v / rounds.off[i])
  return {
    scenario,
    off: median(rounds.off),
    on: median(rounds.on),
    ratio: median(ratios),
    ratios,
    cpu: { off: median(cpu.off), on: median(cpu.on), ratio: median(cpu.on.map((v, i) => v / cpu.off[i])) },
    stopS,
    verify: { seconds: verifyS, bytes: report.summary.bytes, files: report.summary.files, mbPerS: AA ? [0, 0] : verifyS.map((t) => report.summary.bytes / 1024 / 1024 / t) },
    failures
  }
}

const results = []
for (const scenario of SCENARIOS.filter((s) => ONLY === undefined || ONLY.includes(s.id))) {
  process.stderr.write(`(${scenario.id}) ${scenario.name}...\n`)
  results.push(await runScenario(scenario))
}
console.log(`${cpus().length} cores (${cpus()[0]?.model ?? '?'}), Node.js ${process.version}, ${ROUNDS} rounds, flushEveryBytes ${FLUSH_BYTES}`)
console.log('| scenario | integrity off events/s | on events/s | ratio on/off (median of rounds) | rounds | server CPU µs/event off / on (ratio) | shutdown off / on s | verify, first / second run (warm page cache) |')
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
for (const r of results) {
  console.log(`| (${r.scenario.id}) ${r.scenario.name} | ${fmt(r.off)} | ${fmt(r.on)} | ${fmt(r.ratio, 3)} | ${r.ratios.map((x) => fmt(x, 2)).join(' ')} | ${fmt(r.cpu.off, 1)} / ${fmt(r.cpu.on, 1)} (${fmt(r.cpu.ratio, 3)}) | ${fmt(r.stopS.off, 2)} / ${fmt(r.stopS.on, 2)} | ${fmt(r.verify.bytes / 1024 / 1024)} MiB in ${r.verify.files} files: ${r.verify.mbPerS.map((v) => fmt(v)).join(' / ')} MiB/s |`)
}
for (const r of results) {
  console.log(`${r.ratio >= 0.95 ? 'met   ' : 'MISSED'} (${r.scenario.id}) at most 5% fewer events/s with integrity on: ${fmt((1 - r.ratio) * 100, 1)}% fewer`)
  console.log(`${r.verify.mbPerS[1] >= 300 ? 'met   ' : 'MISSED'} (${r.scenario.id}) verify reads local files at 300 MB/s or more: ${fmt(r.verify.mbPerS[1])} MiB/s (second run)`)
  for (const f of r.failures) console.log(`FAILED (${r.scenario.id}): ${f}`)
}
if (results.some((r) => r.failures.length > 0)) process.exitCode = 1
