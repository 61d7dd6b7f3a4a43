// Ingest with `format: parquet` against `format: jsonl`, same requests, same run, in alternation;
// plus the conversion's throughput (MB/s of spooled JSON lines).
//
//   npm run build && node bench/parquet-ingest.mjs
//
// Environment: BENCH_ROUNDS (5), BENCH_SCALE (1: request counts are multiplied by it).
// Three servers run side by side on the filesystem, each with flushEveryBytes 16 MiB so that files
// are completed (and, for Parquet, converted) during the load: jsonl, parquet, and jsonl with zstd
// level 1 (the cost of compressing at all). Each round runs them back to back, the order turned
// every round; after each run the Parquet server is let finish its conversions, so that one
// server's background work never lands in another's measurement. Each server's CPU time (all its
// threads) per event is reported too: the ratio a machine whose CPU is the limit would see.
// "ingest" counts acknowledged events over the load's duration (conversions started during the
// load compete for the CPU); "sustained" also counts the time the conversions took to catch up.
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir, stat } from 'node:fs/promises'
import { cpus, tmpdir, loadavg } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { startServerProcess } from './server-process.mjs'
import { dssEvents } from './dss-events.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SCALE = Number(process.env.BENCH_SCALE ?? 1)

const sample = dssEvents(100, 11)
// One DSS-like event with a unique number per request (__SEQ__), and an array of 100 of them.
const SINGLE = sample[0].text.replace('{', '{"seq":__SEQ__,')
const ARRAY_100 = `[${sample.map((e, i) => e.text.replace('{', `{"seq":${i},`)).join(',')}]`
const SCENARIOS = [
  { id: 'single', name: '1 event/request, 50 conns, fsync', connections: 50, amount: 30000, eventsPerRequest: 1, unique: true, body: SINGLE },
  { id: 'array100', name: 'arrays of 100, 20 conns, fsync', connections: 20, amount: 1500, eventsPerRequest: 100, body: ARRAY_100 }
]

function load (url, scenario, amount, sequence) {
  const request = { method: 'POST', path: '/events/generic/rk-1', headers: { 'content-type': 'application/json' }, body: scenario.body }
  if (scenario.unique) request.setupRequest = (req) => { req.body = scenario.body.replace('__SEQ__', String(sequence.next++)); return req }
  const started = performance.now()
  let lastResponseAt = started
  return new Promise((resolve, reject) => {
    const instance = autocannon({ url, connections: scenario.connections, pipelining: 1, amount, timeout: 30, requests: [request] }, (err, result) => {
      if (err) reject(err)
      else resolve({ ok: result['2xx'], bad: result.non2xx + result.errors + result.timeouts, seconds: (lastResponseAt - started) / 1000, p99: result.latency.p99 })
    })
    instance.on('response', () => { lastResponseAt = performance.now() })
  })
}

async function stats (url) {
  return (await (await fetch(`${url}/stats`)).json()).destinations.all
}

/** Waits until the server has no conversion pending; the seconds it took. */
async function settle (url) {
  const started = performance.now()
  for (;;) {
    const s = await stats(url)
    if ((s.details.parquet?.conversionsPending ?? 0) === 0) return (performance.now() - started) / 1000
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** CPU seconds the process has used so far, all its threads (Linux; 0 elsewhere). */
async function cpuSeconds (pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / 100
}

async function outputBytes (dir) {
  let total = 0
  let files = 0
  for (const e of await readdir(join(dir, 'out'), { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (!e.isFile()) continue
    total += (await stat(join(e.parentPath, e.name))).size
    files++
  }
  return { total, files }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })

async function runScenario (scenario) {
  const servers = {}
  // jsonl-zst: JSON lines compressed with the same zstd level as Parquet's default, the cost of
  // compressing the bytes at all, beside that of encoding them as Parquet.
  const variants = { jsonl: { format: 'jsonl' }, parquet: { format: 'parquet' }, 'jsonl-zst': { format: 'jsonl', compression: 'zstd', zstdLevel: 1 } }
  for (const [format, destination] of Object.entries(variants)) {
    const dir = await mkdtemp(join(tmpdir(), `evs-bench-pq-${scenario.id}-${format}-`))
    await writeFile(join(dir, 'settings.json'), JSON.stringify({
      server: { instanceId: `bench-${format.replace('-', '')}` },
      connections: { local: { type: 'filesystem', root: './out' } },
      destinations: [{ name: 'all', connection: 'local', path: 'events', ...destination, flushEveryBytes: 16 * 1024 * 1024 }]
    }))
    const server = { ...startServerProcess(dir), format }
    servers[format] = { ...server, dir, url: await server.url, sequence: { next: 0 }, acked: 0, runs: [] }
  }
  const amount = Math.max(10, Math.round(scenario.amount * SCALE))
  for (const s of Object.values(servers)) { // warm-up
    s.acked += (await load(s.url, scenario, Math.max(10, Math.round(amount / 10)), s.sequence)).ok * scenario.eventsPerRequest
    await settle(s.url)
  }
  const run = async (s) => {
    const cpuBefore = await cpuSeconds(s.child.pid)
    const r = await load(s.url, scenario, amount, s.sequence)
    const catchUp = await settle(s.url)
    const events = r.ok * scenario.eventsPerRequest
    s.acked += events
    // The server's CPU (conversions included) per event: what bounds the rate once the CPU is the limit.
    const cpuPerEvent = (await cpuSeconds(s.child.pid) - cpuBefore) / events * 1e6
    s.runs.push({ ingest: events / r.seconds, sustained: events / (r.seconds + catchUp), catchUp, p99: r.p99, bad: r.bad, cpuPerEvent })
  }
  for (let round = 0; round < ROUNDS; round++) {
    // Each round runs every server back to back, the order turned by one each round.
    const order = Object.values(servers)
    for (let i = 0; i < order.length; i++) await run(order[(i + round) % order.length])
  }
  const converted = (await stats(servers.parquet.url)).details.parquet
  const failures = []
  for (const s of Object.values(servers)) {
    s.child.kill('SIGTERM')
    const code = await s.exited
    if (code !== 0) failures.push(`${s.format} server exited with ${code}: ${s.output().slice(-1000)}`)
    if (s.runs.some((r) => r.bad > 0)) failures.push(`${s.format}: some requests were not acknowledged`)
  }
  const out = { jsonl: await outputBytes(servers.jsonl.dir), parquet: await outputBytes(servers.parquet.dir) }
  if (out.parquet.files === 0) failures.push('no Parquet file written')
  const ratios = servers.parquet.runs.map((r, i) => r.ingest / servers.jsonl.runs[i].ingest)
  const sustainedRatios = servers.parquet.runs.map((r, i) => r.sustained / servers.jsonl.runs[i].sustained)
  const zstdRatios = servers['jsonl-zst'].runs.map((r, i) => r.ingest / servers.jsonl.runs[i].ingest)
  for (const s of Object.values(servers)) await rm(s.dir, { recursive: true, force: true })
  return {
    scenario,
    jsonl: { ingest: median(servers.jsonl.runs.map((r) => r.ingest)), p99: median(servers.jsonl.runs.map((r) => r.p99)), cpuPerEvent: median(servers.jsonl.runs.map((r) => r.cpuPerEvent)) },
    parquet: { ingest: median(servers.parquet.runs.map((r) => r.ingest)), cpuPerEvent: median(servers.parquet.runs.map((r) => r.cpuPerEvent)), sustained: median(servers.parquet.runs.map((r) => r.sustained)), catchUp: median(servers.parquet.runs.map((r) => r.catchUp)), p99: median(servers.parquet.runs.map((r) => r.p99)) },
    ratio: median(ratios),
    ratios,
    sustainedRatio: median(sustainedRatios),
    conversion: { files: converted.converted, inputMB: converted.convertedInputBytes / 1e6, outputMB: converted.convertedOutputBytes / 1e6, seconds: converted.conversionSeconds, mbPerS: converted.convertedInputBytes / 1e6 / converted.conversionSeconds },
    out,
    jsonlZst: { ingest: median(servers['jsonl-zst'].runs.map((r) => r.ingest)), cpuPerEvent: median(servers['jsonl-zst'].runs.map((r) => r.cpuPerEvent)), ratio: median(zstdRatios), ratios: zstdRatios },
    acked: { jsonl: servers.jsonl.acked, parquet: servers.parquet.acked, jsonlZst: servers['jsonl-zst'].acked },
    failures
  }
}

console.log(`Parquet ingest benchmark: ${ROUNDS} rounds per format, scale ${SCALE}, ${cpus().length} cores (${cpus()[0]?.model}), Node.js ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
const results = []
for (const scenario of SCENARIOS) {
  process.stdout.write(`(${scenario.id}) ${scenario.name}... `)
  const result = await runScenario(scenario)
  results.push(result)
  console.log(`jsonl ${fmt(result.jsonl.ingest)} events/s, parquet ${fmt(result.parquet.ingest)} (ratio ${fmt(result.ratio, 2)}; rounds ${result.ratios.map((r) => fmt(r, 2)).join(' ')}), jsonl zstd 1 ${fmt(result.jsonlZst.ingest)} (ratio ${fmt(result.jsonlZst.ratio, 2)})${result.failures.length ? '  FAILED: ' + result.failures.join('; ') : ''}`)
}

const rows = [
  '| scenario | jsonl events/s | parquet events/s (ingest) | ratio (median of rounds) | rounds | parquet sustained events/s | sustained ratio | jsonl zstd 1 events/s (ratio) | server CPU µs/event jsonl / parquet / jsonl zstd 1 | conversion MB/s of input | converted | output jsonl / parquet bytes |',
  '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ...results.map((r) => `| ${r.scenario.name} | ${fmt(r.jsonl.ingest)} | ${fmt(r.parquet.ingest)} | ${fmt(r.ratio, 2)} | ${r.ratios.map((x) => fmt(x, 2)).join(' ')} | ${fmt(r.parquet.sustained)} | ${fmt(r.sustainedRatio, 2)} | ${fmt(r.jsonlZst.ingest)} (${fmt(r.jsonlZst.ratio, 2)}) | ${fmt(r.jsonl.cpuPerEvent, 1)} / ${fmt(r.parquet.cpuPerEvent, 1)} / ${fmt(r.jsonlZst.cpuPerEvent, 1)} (parquet ${fmt(r.jsonl.cpuPerEvent / r.parquet.cpuPerEvent, 2)}, zstd ${fmt(r.jsonl.cpuPerEvent / r.jsonlZst.cpuPerEvent, 2)}) | ${fmt(r.conversion.mbPerS, 1)} | ${r.conversion.files} files, ${fmt(r.conversion.inputMB, 1)} MB → ${fmt(r.conversion.outputMB, 1)} MB | ${fmt(r.out.jsonl.total)} / ${fmt(r.out.parquet.total)} |`)
]
const note = `Machine: ${cpus().length} cores (${cpus()[0]?.model}), Node.js ${process.version}, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')} (a shared machine: figures are noisy; compare within a round). ${ROUNDS} rounds, each running the three servers back to back in an order turned every round, load generator on the same machine. "ingest": acknowledged events over the load's duration; "sustained": over the load plus the time the conversions took to catch up after it. "server CPU": user and system time of the server process (all threads, conversions included) from the start of a run to the end of its catch-up, per event, median of rounds; the figures in brackets are jsonl's over the other's, the ingest ratio a machine whose CPU is the limit would see. "jsonl zstd 1": a third server, JSON lines with \`compression: zstd\` at level 1 (Parquet's default codec and level), run in the same rounds: the cost of compressing the events at all.`
console.log(`\n${rows.join('\n')}\n\n${note}`)
await mkdir(join(here, 'results'), { recursive: true })
await writeFile(join(here, 'results', 'parquet-ingest.md'), `${rows.join('\n')}\n\n${note}\n`)
await writeFile(join(here, 'results', 'parquet-ingest.json'), JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, scale: SCALE, results: results.map(({ scenario, ...r }) => ({ scenario: scenario.id, ...r })) }, null, 2))
const failed = results.filter((r) => r.failures.length > 0)
if (failed.length > 0) {
  console.error(`FAILED: ${failed.map((r) => r.failures.join('; ')).join('\n')}`)
  process.exit(1)
}
