// The `query` scenario: scan speed of `dss-event-server query` over DSS-like .jsonl, .jsonl.gz,
// .jsonl.zst and .parquet on local disk, with a field filter matching 1% of events, against `grep -c`
// (`zcat | grep -c`, `zstdcat | grep -c`) of the same value over the same files, in the same run,
// rounds alternating. Parquet has no such baseline: its figures stand alone.
//
//   npm run build && node bench/query.mjs
//
// Environment: QUERY_BENCH_MB (1024: size of the .jsonl data), QUERY_BENCH_GZ_MB (the same: size,
// before compression, of the .jsonl.gz data; 0 skips it), QUERY_BENCH_ZST_MB (likewise, .jsonl.zst),
// QUERY_BENCH_PARQUET_MB (at most 256: size of the lines converted to .parquet, which is slow to
// make; 0 skips it), QUERY_BENCH_ROUNDS (3),
// QUERY_BENCH_DIR (where the data goes; kept, and reused when it matches, if given).
// `runQueryBench(options)` is the same run for another script (bench/run.mjs) to call.
import { execFile } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, platform, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')
const MB = 1024 * 1024
const gzipAsync = promisify(gzip)

const USERS = ['admin', 'data.scientist', 'analyst-42', 'svc-automation', 'marie.curie', 'j.doe', 'ml-ops']
const MSG_TYPES = ['dataset-read-data', 'application-open', 'project-save', 'scenario-run', 'flow-job-done', 'login', 'api-query']
const TOPICS = ['generic', 'generic', 'generic', 'apinode-query', 'authfail']
/** The value the filter looks for: in 1% of events, and nowhere else. */
export const NEEDLE_PROJECT = 'CHURN_AUDIT'

/** A DSS audit line of about 600 bytes, as the server writes it. */
function line (n, time) {
  const user = USERS[n % USERS.length]
  const project = n % 100 === 37 ? NEEDLE_PROJECT : `PROJECT_${(n * 7) % 53}`
  const ip = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`
  const ts = new Date(time).toISOString().replace('Z', '+0000')
  return `{"clientEvent":{"msgType":"${MSG_TYPES[(n >> 3) % MSG_TYPES.length]}","authUser":"${user}","authSource":"USER_FROM_UI","authVia":["SESSION_COOKIE"],"clientIP":"${ip}","originalIP":"${ip}","xForwardedFor":["${ip}"],"callPath":["/dip/api/datasets/get-sample","com.dataiku.dip.server.controllers.DatasetsController.getSample"],"projectKey":"${project}","datasetName":"customers_prepared_${n % 17}","sessionId":"${(n * 2654435761 >>> 0).toString(16).padStart(8, '0')}5f1c2a9b","seq":${n},"details":{"rows":${(n * 31) % 100000},"columns":42,"durationMs":${n % 977},"sampling":"HEAD_SEQUENTIAL","outcome":"${n % 50 === 0 ? 'FAILURE' : 'SUCCESS'}"},"topic":"${TOPICS[n % TOPICS.length]}"},"origAddress":"10.0.0.${n % 7}","serverTimestamp":"${ts}"}\n`
}

const START = Date.UTC(2026, 10, 25, 0, 0, 0)
const FILE_MB = 64

const EXTENSION = { none: '.jsonl', gzip: '.jsonl.gz', zstd: '.jsonl.zst', parquet: '.parquet' }

/**
 * Writes `mb` MiB of lines into hourly folders of a files destination (`audit/generic/dss-node-1/
 * 2026/11/25/HH/`), in files of FILE_MB; gzip and zstd files hold one member or frame per 1,000
 * lines, as the server's commits do; Parquet files are converted by the server's own converter
 * from a spool file. Returns the number of lines and of those matching.
 */
async function generate (out, mb, compression) {
  const zstd = compression === 'zstd' ? await (await import(pathToFileURL(join(root, 'dist', 'plugins', 'files', 'zstd.js')).href)).loadZstd() : undefined
  const parquet = compression === 'parquet' ? await import(pathToFileURL(join(root, 'dist', 'plugins', 'files', 'parquet.js')).href) : undefined
  const head = parquet?.spoolLineHead('generic', 'dss-node-1').toString()
  const total = mb * MB
  const hours = 24
  const perHour = Math.ceil(total / hours)
  let written = 0
  let n = 0
  let matching = 0
  let seq = 0
  for (let h = 0; h < hours && written < total; h++) {
    let hourBytes = 0
    while (hourBytes < perHour && written < total) {
      const folder = join(out, 'audit', 'generic', 'dss-node-1', '2026', '11', '25', String(h).padStart(2, '0'))
      await mkdir(folder, { recursive: true })
      const name = `bench_audit_${String(++seq).padStart(10, '0')}${EXTENSION[compression]}`
      const target = join(folder, name)
      const stream = createWriteStream(parquet !== undefined ? join(out, '..', 'spool.parquet.jsonl') : target)
      let fileBytes = 0
      const members = []
      while (fileBytes < FILE_MB * MB && hourBytes < perHour && written < total) {
        const lines = []
        let chunk = 0
        for (let i = 0; i < 1000; i++, n++) {
          const text = line(n, START + h * 3_600_000 + Math.floor((hourBytes + chunk) / perHour * 3_600_000))
          if (n % 100 === 37) matching++
          lines.push(head === undefined ? text : head + text.slice(1))
          chunk += text.length
        }
        const data = lines.join('')
        if (compression === 'gzip') {
          members.push(gzipAsync(data))
          if (members.length >= 4) for (const m of members.splice(0)) if (!stream.write(await m)) await new Promise((resolve) => stream.once('drain', resolve))
        } else if (zstd !== undefined) {
          if (!stream.write(zstd.compress(Buffer.from(data), 3))) await new Promise((resolve) => stream.once('drain', resolve))
        } else if (!stream.write(data)) {
          await new Promise((resolve) => stream.once('drain', resolve))
        }
        fileBytes += chunk
        hourBytes += chunk
        written += chunk
      }
      for (const m of members.splice(0)) stream.write(await m)
      await new Promise((resolve, reject) => stream.end((err) => err ? reject(err) : resolve()))
      if (parquet !== undefined) {
        await parquet.convertSpoolFile(join(out, '..', 'spool.parquet.jsonl'), target, { compression: 'zstd', zstdLevel: 3, rowGroupRows: 100_000, rowGroupBytes: 32 * MB })
        await rm(join(out, '..', 'spool.parquet.jsonl'))
      }
    }
  }
  return { lines: n, matching, bytes: written }
}

async function files (dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort()
}

/** Wall-clock and CPU seconds (user + system, every thread) of `fn` in this process. */
async function timed (fn) {
  const start = process.hrtime.bigint()
  const cpu = process.cpuUsage()
  const result = await fn()
  const used = process.cpuUsage(cpu)
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, cpuSeconds: (used.user + used.system) / 1e6, result }
}

/**
 * `grep -c` of the filter's bytes over the files (a floor: grep cannot tell a field from a
 * substring), or `zcat | grep -c`; wall-clock and CPU seconds of every process, from GNU time.
 */
async function grepCount (paths, pattern, decompress) {
  const script = decompress !== undefined ? `${decompress} "$@" | grep -F -c -- "$PATTERN"` : 'grep -F -c -h -- "$PATTERN" "$@"'
  const start = process.hrtime.bigint()
  const { stdout, stderr } = await promisify(execFile)('/usr/bin/time', ['-f', 'TIME %U %S', 'sh', '-c', script, 'sh', ...paths], { env: { ...process.env, PATTERN: pattern }, maxBuffer: 64 * MB })
    .catch((err) => ({ stdout: err.stdout, stderr: err.stderr }))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  const times = /TIME ([\d.]+) ([\d.]+)/.exec(stderr)
  return { seconds, cpuSeconds: times === null ? NaN : Number(times[1]) + Number(times[2]), result: stdout.trim().split('\n').reduce((sum, n) => sum + Number(n), 0) }
}

async function queryCount (queryEvents, document, baseDir) {
  let count = 0
  const stats = { listCalls: 0, filesListed: 0, filesOpened: 0, bytesRead: 0, bytesScanned: 0, linesParsed: 0, eventsMatched: 0, filesUnreadable: 0, linesCorrupt: 0, filesPartial: 0 }
  for await (const event of queryEvents({ document, baseDir, where: `clientEvent.projectKey=${NEEDLE_PROJECT}`, stats })) {
    if (event.record.clientEvent.projectKey === NEEDLE_PROJECT) count++
  }
  return { count, stats }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

export async function runQueryBench (options = {}) {
  const mb = options.mb ?? Number(process.env.QUERY_BENCH_MB ?? 1024)
  const gzMb = options.gzMb ?? Number(process.env.QUERY_BENCH_GZ_MB ?? mb)
  const zstMb = options.zstMb ?? Number(process.env.QUERY_BENCH_ZST_MB ?? mb)
  const parquetMb = options.parquetMb ?? Number(process.env.QUERY_BENCH_PARQUET_MB ?? Math.min(mb, 256))
  const rounds = options.rounds ?? Number(process.env.QUERY_BENCH_ROUNDS ?? 3)
  const keep = process.env.QUERY_BENCH_DIR !== undefined
  const dir = process.env.QUERY_BENCH_DIR ?? await mkdtemp(join(tmpdir(), 'evs-query-bench-'))
  const log = options.log ?? ((text) => process.stderr.write(`${text}\n`))
  const { queryEvents } = await import(pathToFileURL(join(root, 'dist', 'index.js')).href)
  const results = []
  try {
    const kinds = [['jsonl', mb, 'none', undefined], ['jsonl.gz', gzMb, 'gzip', 'zcat'], ['jsonl.zst', zstMb, 'zstd', 'zstdcat'], ['parquet', parquetMb, 'parquet', null]]
    for (const [kind, size, compression, decompress] of kinds) {
      if (size <= 0) continue
      // No grep for Parquet's columns: its figures stand alone.
      const baseline = decompress !== null
      const base = join(dir, `${kind}-${size}`)
      const out = join(base, 'out')
      const marker = join(base, 'generated.json')
      let generated = keep ? await readFile(marker, 'utf8').then(JSON.parse, () => undefined) : undefined
      if (generated === undefined) {
        await rm(base, { recursive: true, force: true })
        log(`generating ${size} MB of .${kind} in ${base} ...`)
        generated = (await timed(() => generate(out, size, compression))).result
        await writeFile(marker, JSON.stringify(generated))
      }
      const paths = await files(out)
      const storedBytes = (await Promise.all(paths.map(async (p) => (await readFile(p)).length))).reduce((a, b) => a + b, 0)
      const document = { connections: { local: { type: 'filesystem', root: './out' } }, destinations: [{ name: 'audit', connection: 'local', path: 'audit' }] }
      const pattern = `"projectKey":"${NEEDLE_PROJECT}"`
      // Warm the page cache (and the query's code) for both sides alike.
      if (baseline) await grepCount(paths, pattern, decompress)
      await queryCount(queryEvents, document, base)
      const query = []
      const grep = []
      let last
      for (let round = 0; round < rounds; round++) {
        const pair = !baseline ? ['query'] : round % 2 === 0 ? ['query', 'grep'] : ['grep', 'query']
        for (const side of pair) {
          if (side === 'query') {
            const t = await timed(() => queryCount(queryEvents, document, base))
            if (t.result.count !== generated.matching) throw new Error(`query found ${t.result.count} events, expected ${generated.matching}`)
            query.push(t)
            last = t.result.stats
          } else {
            const t = await grepCount(paths, pattern, decompress)
            if (t.result !== generated.matching) throw new Error(`grep counted ${t.result} lines, expected ${generated.matching}`)
            grep.push(t)
          }
        }
        log(`  .${kind} round ${round + 1}: query ${query.at(-1).seconds.toFixed(2)} s (${query.at(-1).cpuSeconds.toFixed(2)} s CPU)${baseline ? `, baseline ${grep.at(-1).seconds.toFixed(2)} s (${grep.at(-1).cpuSeconds.toFixed(2)} s CPU)` : ''}`)
      }
      const dataMB = generated.bytes / MB
      const none = () => null
      const g = baseline ? (f) => f() : none
      results.push({
        format: kind,
        dataMB: +dataMB.toFixed(1),
        storedMB: +(storedBytes / MB).toFixed(1),
        files: paths.length,
        events: generated.lines,
        matching: generated.matching,
        querySeconds: +median(query.map((t) => t.seconds)).toFixed(3),
        grepSeconds: g(() => +median(grep.map((t) => t.seconds)).toFixed(3)),
        queryMBps: +(dataMB / median(query.map((t) => t.seconds))).toFixed(0),
        queryStoredMBps: +(storedBytes / MB / median(query.map((t) => t.seconds))).toFixed(0),
        grepMBps: g(() => +(dataMB / median(grep.map((t) => t.seconds))).toFixed(0)),
        ratioToGrep: g(() => +median(query.map((q, i) => grep[i].seconds / q.seconds)).toFixed(2)),
        queryMBperCpuS: +(dataMB / median(query.map((t) => t.cpuSeconds))).toFixed(0),
        grepMBperCpuS: g(() => +(dataMB / median(grep.map((t) => t.cpuSeconds))).toFixed(0)),
        cpuRatioToGrep: g(() => +median(query.map((q, i) => grep[i].cpuSeconds / q.cpuSeconds)).toFixed(2)),
        linesParsed: last.linesParsed,
        rounds: query.map((q, i) => ({ query: +q.seconds.toFixed(3), queryCpu: +q.cpuSeconds.toFixed(3), ...(baseline ? { grep: +grep[i].seconds.toFixed(3), grepCpu: +grep[i].cpuSeconds.toFixed(3) } : {}) }))
      })
    }
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true })
  }
  return {
    scenario: 'query',
    filter: `clientEvent.projectKey=${NEEDLE_PROJECT} (1% of events)`,
    baseline: 'grep -F -c (".jsonl"), zcat | grep -F -c (".jsonl.gz"), zstdcat | grep -F -c (".jsonl.zst"), same files, same run; none for ".parquet"',
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGB: +(totalmem() / 1024 ** 3).toFixed(0), platform: `${platform()} ${release()}`, node: process.version, loadAverage1m: +loadavg()[0].toFixed(2) },
    at: new Date().toISOString(),
    results
  }
}

export function queryTable (report) {
  const rows = [['format', 'data MB', 'stored MB', 'query MB/s', 'query stored MB/s', 'baseline MB/s', 'ratio', 'query MB/CPU-s', 'baseline MB/CPU-s', 'CPU ratio']]
  for (const r of report.results) rows.push([`.${r.format}`, r.dataMB, r.storedMB, r.queryMBps, r.queryStoredMBps, r.grepMBps ?? '—', r.ratioToGrep ?? '—', r.queryMBperCpuS, r.grepMBperCpuS ?? '—', r.cpuRatioToGrep ?? '—'])
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  const fmt = (r) => `| ${r.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`
  return [fmt(rows[0]), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.slice(1).map(fmt)].join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const report = await runQueryBench()
  const text = `Filter: ${report.filter}; baseline: ${report.baseline}\nMB/s: MB of lines (decompressed) per wall-clock second; stored MB/s: MB of the files as stored; MB/CPU-s: per CPU second of every thread and process; ratio: baseline time / query time (above 1: the query is faster); medians of the rounds.\nMachine: ${report.machine.cpus} × ${report.machine.cpu}, ${report.machine.memoryGB} GiB, ${report.machine.platform}, Node.js ${report.machine.node}; 1-minute load average at the end: ${report.machine.loadAverage1m}\n\n${queryTable(report)}\n`
  process.stdout.write(text)
  await mkdir(join(here, 'results'), { recursive: true })
  await writeFile(join(here, 'results', 'query-latest.json'), `${JSON.stringify(report, null, 2)}\n`)
  await writeFile(join(here, 'results', 'query-latest.md'), text)
}
