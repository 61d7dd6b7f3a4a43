// npm run bench: dss-event-server against a bare-Fastify ceiling, same requests, in alternation.
// Environment: BENCH_ROUNDS (5), BENCH_SCALE (1: request counts are multiplied by it),
// BENCH_ONLY (e.g. "a,d"), BENCH_PROFILE (1: write a --cpu-prof profile of the server per scenario).
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { cpus, hostname, totalmem, tmpdir, platform, release } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync, gunzipSync } from 'node:zlib'
import autocannon from 'autocannon'
import { S3Client, ListObjectsV2Command, GetObjectCommand } from '@aws-sdk/client-s3'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SCALE = Number(process.env.BENCH_SCALE ?? 1)
const ONLY = process.env.BENCH_ONLY?.split(',')
const PROFILE = process.env.BENCH_PROFILE === '1'

// A DSS audit message of about 600 bytes; __SEQ__ becomes a unique number per event where ids are checked.
const EVENT = {
  msgType: 'dataset-read-data',
  authUser: 'data.scientist',
  authSource: 'USER_FROM_UI',
  authVia: ['SESSION_COOKIE'],
  clientIP: '10.0.3.17',
  originalIP: '10.0.3.17',
  xForwardedFor: ['10.0.3.17'],
  callPath: ['/dip/api/datasets/get-sample', 'com.dataiku.dip.server.controllers.DatasetsController.getSample'],
  projectKey: 'CUSTOMER_CHURN',
  datasetName: 'customers_prepared',
  sessionId: '5f1c2a9b7e3d4c60',
  details: { rows: 10000, columns: 42, durationMs: 187, sampling: 'HEAD_SEQUENTIAL', outcome: 'SUCCESS' },
  seq: '__SEQ__'
}
const eventText = (seq, extra = '') => JSON.stringify({ ...EVENT, seq }).replace('{', `{${extra}`)
const SINGLE = JSON.stringify(EVENT).replace('"__SEQ__"', '__SEQ__')
const ARRAY_100 = `[${Array.from({ length: 100 }, (_, i) => eventText(i)).join(',')}]`
const NDJSON_1000_GZ = gzipSync(Array.from({ length: 1000 }, (_, i) => eventText(i)).join('\n') + '\n')

const SCENARIOS = [
  { id: 'a', name: '1 event/request, 50 conns, fsync', connections: 50, amount: 60000, eventsPerRequest: 1, unique: true, body: SINGLE, contentType: 'application/json', destination: {} },
  { id: 'b', name: 'arrays of 100, 20 conns, fsync', connections: 20, amount: 4000, eventsPerRequest: 100, body: ARRAY_100, contentType: 'application/json', destination: {} },
  { id: 'c', name: 'gzip NDJSON of 1000, 10 conns', connections: 10, amount: 600, eventsPerRequest: 1000, body: NDJSON_1000_GZ, contentType: 'application/x-ndjson', gzip: true, destination: {} },
  { id: 'd', name: '5000 routing keys round-robin, commit log', connections: 50, amount: 60000, eventsPerRequest: 1, unique: true, routingKeys: 5000, body: SINGLE, contentType: 'application/json', destination: { maxOpenFiles: 256, commitLog: true } },
  { id: 'e', name: '(a) with durability: write', connections: 50, amount: 60000, eventsPerRequest: 1, unique: true, body: SINGLE, contentType: 'application/json', destination: { durability: 'write' } },
  { id: 'f', name: '(a) to S3 (s3rver) via spool', connections: 50, amount: 60000, eventsPerRequest: 1, unique: true, body: SINGLE, contentType: 'application/json', destination: { flushEveryBytes: 8 * 1024 * 1024, uploadShutdownGraceS: 300 }, s3: true }
]

function spawnListening (args, options = {}) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
  let output = ''
  child.stdout.on('data', (c) => { output += c })
  child.stderr.on('data', (c) => { output += c })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)))
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start: ${output}`)), 30000)
    const check = () => {
      const m = /(?:listening|Server listening at) (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (m) { clearTimeout(timer); resolve(m[1]) }
    }
    child.stdout.on('data', check)
    exited.then((code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${output}`)) })
  })
  return { child, url, exited, output: () => output }
}

async function peakRssMb (pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0)
  return Math.round(kb / 1024)
}

function load (url, scenario, amount, sequence) {
  let rk = 0
  const headers = { 'content-type': scenario.contentType }
  if (scenario.gzip) headers['content-encoding'] = 'gzip'
  const request = {
    method: 'POST',
    path: '/events/generic/rk-1',
    headers,
    body: scenario.body
  }
  if (scenario.unique || scenario.routingKeys) {
    request.setupRequest = (req) => {
      if (scenario.unique) req.body = scenario.body.replace('__SEQ__', String(sequence.next++))
      if (scenario.routingKeys) req.path = `/events/generic/rk-${rk++ % scenario.routingKeys}`
      return req
    }
  }
  const started = performance.now()
  let responses = 0
  let lastResponseAt = started
  return new Promise((resolve, reject) => {
    const instance = autocannon({ url, connections: scenario.connections, pipelining: 1, amount, timeout: 30, requests: [request] }, (err, result) => {
      // autocannon notices the end on its once-a-second tick: time the last response instead.
      if (err) reject(err)
      else resolve({ ...result, elapsedS: (lastResponseAt - started) / 1000 })
    })
    instance.on('response', () => {
      responses++
      lastResponseAt = performance.now()
    })
  })
}

function summarise (result, scenario) {
  const seconds = result.elapsedS
  return {
    requestsPerS: result['2xx'] / seconds,
    eventsPerS: (result['2xx'] * scenario.eventsPerRequest) / seconds,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    ok: result['2xx'],
    bad: result.non2xx + result.errors + result.timeouts
  }
}

const median = (runs) => [...runs].sort((a, b) => a.eventsPerS - b.eventsPerS)[Math.floor(runs.length / 2)]

async function listFilesRecursive (dir) {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name))
  } catch { return [] }
}

function countLines (texts, unique) {
  let lines = 0
  const seen = new Map()
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue
      lines++
      if (unique) {
        const seq = /"seq":(\d+)/.exec(line)?.[1]
        seen.set(seq, (seen.get(seq) ?? 0) + 1)
      }
    }
  }
  const duplicated = [...seen.values()].filter((n) => n > 1).length
  return { lines, distinct: seen.size, duplicated }
}

async function outputTexts (dir, s3) {
  if (s3 === undefined) {
    const texts = []
    for (const f of await listFilesRecursive(join(dir, 'out'))) {
      const data = await readFile(f)
      texts.push((f.endsWith('.gz') ? gunzipSync(data) : data).toString('utf8'))
    }
    return texts
  }
  const client = new S3Client({ endpoint: s3, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' })
  const texts = []
  let token
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: 'bench', ContinuationToken: token }))
    for (const item of page.Contents ?? []) {
      const res = await client.send(new GetObjectCommand({ Bucket: 'bench', Key: item.Key }))
      texts.push(await res.Body.transformToString())
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  client.destroy()
  return texts
}

async function runScenario (scenario) {
  const dir = await mkdtemp(join(tmpdir(), `evs-bench-${scenario.id}-`))
  let s3
  let s3Process
  if (scenario.s3) {
    await mkdir(join(dir, 's3'))
    s3Process = spawnListening([join(here, 's3rver.mjs'), join(dir, 's3')])
    s3 = await s3Process.url
  }
  const connection = s3 === undefined
    ? { type: 'filesystem', root: './out' }
    : { type: 's3', bucket: 'bench', endpoint: s3, forcePathStyle: true, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }
  const settings = {
    server: { instanceId: `bench-${scenario.id}` },
    connections: { store: connection },
    destinations: [{ name: 'all', connection: 'store', path: 'events', ...scenario.destination }]
  }
  await writeFile(join(dir, 'settings.json'), JSON.stringify(settings))
  const profileArgs = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${join(here, 'results', 'profiles')}`, `--cpu-prof-name=server-${scenario.id}.cpuprofile`] : []
  const server = spawnListening([...profileArgs, join(root, 'bin', 'dss-event-server.js'), 'start', '--config', join(dir, 'settings.json'), '--host', '127.0.0.1', '--port', '0'], { cwd: dir })
  const ceiling = spawnListening([join(here, 'ceiling.mjs')])
  const [serverUrl, ceilingUrl] = await Promise.all([server.url, ceiling.url])

  const sequence = { next: 0 }
  let acknowledged = 0
  let maxOpenFiles = 0
  const poll = setInterval(async () => {
    try {
      const stats = await (await fetch(`${serverUrl}/stats`)).json()
      maxOpenFiles = Math.max(maxOpenFiles, stats.destinations.all.openFiles)
    } catch {}
  }, 200)
  const amount = Math.max(10, Math.round(scenario.amount * SCALE))
  // Warm both up (JIT, file creation), then alternate measured rounds.
  const warm = Math.max(10, Math.round(amount / 10))
  await load(ceilingUrl, scenario, warm, { next: 0 })
  acknowledged += (await load(serverUrl, scenario, warm, sequence))['2xx'] * scenario.eventsPerRequest
  const rounds = { ceiling: [], server: [] }
  const runServer = async () => {
    const result = await load(serverUrl, scenario, amount, sequence)
    acknowledged += result['2xx'] * scenario.eventsPerRequest
    rounds.server.push(summarise(result, scenario))
  }
  const runCeiling = async () => { rounds.ceiling.push(summarise(await load(ceilingUrl, scenario, amount, { next: 0 }), scenario)) }
  // Each round is a back-to-back pair, its order swapped every round: the machine's drift (a shared
  // VM's neighbours) then weighs on both sides alike.
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) { await runCeiling(); await runServer() } else { await runServer(); await runCeiling() }
  }
  clearInterval(poll)
  const rss = { server: await peakRssMb(server.child.pid), ceiling: await peakRssMb(ceiling.child.pid) }
  server.child.kill('SIGTERM')
  ceiling.child.kill('SIGTERM')
  const [serverExit] = await Promise.all([server.exited, ceiling.exited])
  const written = countLines(await outputTexts(dir, s3), scenario.unique)
  if (s3Process) {
    s3Process.child.kill('SIGTERM')
    await s3Process.exited
  }
  await rm(dir, { recursive: true, force: true })

  const failures = []
  if (serverExit !== 0) failures.push(`server exited with ${serverExit}:\n${server.output().slice(-2000)}`)
  if (rounds.server.some((r) => r.bad > 0)) failures.push('some requests were not acknowledged')
  if (written.lines !== acknowledged) failures.push(`${acknowledged} events acknowledged but ${written.lines} lines written`)
  if (scenario.unique && (written.duplicated > 0 || written.distinct !== acknowledged)) failures.push(`${written.duplicated} events duplicated, ${written.distinct} distinct of ${acknowledged}`)
  if (scenario.destination.maxOpenFiles !== undefined && maxOpenFiles > scenario.destination.maxOpenFiles) failures.push(`${maxOpenFiles} files open, over the cap of ${scenario.destination.maxOpenFiles}`)
  const ratios = rounds.server.map((r, i) => r.eventsPerS / rounds.ceiling[i].eventsPerS).sort((a, b) => a - b)
  const ratio = ratios[Math.floor(ratios.length / 2)]
  return { scenario, ceiling: median(rounds.ceiling), server: median(rounds.server), ratio, ratios, rounds, rss, acknowledged, written, maxOpenFiles, failures }
}

const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })

function table (results) {
  const rows = [['scenario', 'side', 'events/s', 'requests/s', 'p50 ms', 'p99 ms', 'peak RSS MB', 'ratio to ceiling']]
  for (const r of results) {
    rows.push([`(${r.scenario.id}) ${r.scenario.name}`, 'ceiling', fmt(r.ceiling.eventsPerS), fmt(r.ceiling.requestsPerS), fmt(r.ceiling.p50Ms, 1), fmt(r.ceiling.p99Ms, 1), String(r.rss.ceiling), '1.00'])
    rows.push(['', 'dss-event-server', fmt(r.server.eventsPerS), fmt(r.server.requestsPerS), fmt(r.server.p50Ms, 1), fmt(r.server.p99Ms, 1), String(r.rss.server), fmt(r.ratio, 2)])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  const line = (row) => `| ${row.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  return [line(rows[0]), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.slice(1).map(line)].join('\n')
}

function targets (results) {
  const by = Object.fromEntries(results.map((r) => [r.scenario.id, r]))
  const out = []
  const check = (name, ok, detail) => out.push(`${ok ? 'met    ' : 'MISSED '} ${name}: ${detail}`)
  if (by.a) {
    const ratio = by.a.ratio
    check('(a) >= 0.85 of the ceiling', ratio >= 0.85, fmt(ratio, 2))
    check('(a) p99 < 20 ms', by.a.server.p99Ms < 20, `${by.a.server.p99Ms} ms`)
  }
  if (by.b) {
    const ratio = by.b.ratio
    check('(b) >= 0.6 of the ceiling', ratio >= 0.6, fmt(ratio, 2))
  }
  if (by.d && by.a) {
    const ratio = by.d.server.eventsPerS / by.a.server.eventsPerS
    check('(d) >= 0.5 of (a)', ratio >= 0.5, `${fmt(ratio, 2)}, at most ${by.d.maxOpenFiles} files open (cap ${by.d.scenario.destination.maxOpenFiles})`)
  }
  for (const r of results) check(`(${r.scenario.id}) peak RSS < 250 MB`, r.rss.server < 250, `${r.rss.server} MB`)
  for (const r of results) check(`(${r.scenario.id}) no line lost or duplicated`, r.failures.length === 0, r.failures.length === 0 ? `${r.acknowledged} acknowledged, ${r.written.lines} written` : r.failures.join('; '))
  return out.join('\n')
}

const machine = { hostname: hostname(), cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), os: `${platform()} ${release()}`, node: process.version }
console.log(`dss-event-server benchmark: ${ROUNDS} rounds per side, scale ${SCALE}, on ${machine.cores} cores (${machine.cpu}), Node.js ${machine.node}`)
const results = []
for (const scenario of SCENARIOS) {
  if (ONLY && !ONLY.includes(scenario.id)) continue
  process.stdout.write(`(${scenario.id}) ${scenario.name}... `)
  const result = await runScenario(scenario)
  console.log(`${fmt(result.server.eventsPerS)} events/s (ceiling ${fmt(result.ceiling.eventsPerS)}; ratio ${fmt(result.ratio, 2)}, rounds ${result.ratios.map((x) => fmt(x, 2)).join(' ')})${result.failures.length ? '  FAILED' : ''}`)
  results.push(result)
}
console.log(`\n${table(results)}\n\n${targets(results)}`)
const stamp = new Date().toISOString().replace(/[:.]/g, '-')
const report = { date: new Date().toISOString(), machine, rounds: ROUNDS, scale: SCALE, results: results.map(({ scenario, ...r }) => ({ scenario: { id: scenario.id, name: scenario.name, connections: scenario.connections, eventsPerRequest: scenario.eventsPerRequest, requestsPerRound: Math.round(scenario.amount * SCALE) }, ...r })) }
await mkdir(join(here, 'results'), { recursive: true })
await writeFile(join(here, 'results', `${stamp}.json`), JSON.stringify(report, null, 2))
await writeFile(join(here, 'results', 'latest.json'), JSON.stringify(report, null, 2))
await writeFile(join(here, 'results', 'latest.md'), `${table(results)}\n\n${targets(results)}\n\nMachine: ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, ${machine.os}, Node.js ${machine.node}; ${ROUNDS} rounds per side, each a back-to-back pair in alternating order; events/s are medians, the ratio is the median of the rounds' ratios; load generator on the same machine.\n`)
const failed = results.filter((r) => r.failures.length > 0)
if (failed.length > 0) {
  console.error(`\nFAILED: ${failed.map((r) => `(${r.scenario.id}) ${r.failures.join('; ')}`).join('\n')}`)
  process.exit(1)
}
