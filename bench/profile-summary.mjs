// Where a server's JavaScript thread spends its time, from a --cpu-prof profile (BENCH_PROFILE=1
// writes one per scenario in bench/results/profiles/):
//
//   node bench/profile-summary.mjs bench/results/profiles/server-a.cpuprofile [REQUESTS]
//
// Self time by category (Node's HTTP and streams, Fastify, this server's files, native calls such
// as the socket writes and the hand-off of fdatasync to libuv's pool, GC), leaving out idle time and
// the start-up (module loading). With REQUESTS (the requests answered while profiling), also µs
// per request.
import { readFileSync } from 'node:fs'

const [file, requests] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: node bench/profile-summary.mjs PROFILE.cpuprofile [REQUESTS]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(file, 'utf8'))
const parent = new Map()
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const selfMs = new Map()
for (let i = 0; i < profile.samples.length; i++) selfMs.set(profile.samples[i], (selfMs.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000)

const startup = new Map()
function isStartup (id) {
  if (startup.has(id)) return startup.get(id)
  const { url, functionName } = byId.get(id).callFrame
  let result = /modules\/(esm|cjs)|bootstrap|compileSourceTextModule|internalModuleStat/.test(url + functionName)
  if (!result && parent.has(id)) result = isStartup(parent.get(id))
  startup.set(id, result)
  return result
}

function category (node) {
  const { url, functionName } = node.callFrame
  if (functionName === '(idle)') return 'idle'
  if (isStartup(node.id)) return 'start-up'
  if (functionName === '(garbage collector)') return 'GC'
  if (functionName === '(program)') return 'native, unattributed'
  if (url === '') return `native: ${functionName}`
  if (/node_modules\/(fastify|find-my-way|avvio|light-my-request|@fastify|fast-json-stringify|secure-json-parse|toad-cache)\//.test(url)) return 'Fastify'
  if (/node_modules\/(pino|sonic-boom)/.test(url)) return 'logging'
  if (/node_modules\/prom-client/.test(url)) return 'prom-client'
  if (/\/(core|plugins|cli)\//.test(url)) return `server: ${url.split('/').slice(-2).join('/')}`
  if (url.startsWith('node:')) return `Node.js: ${url.replace('node:internal/', '').replace('node:', '')}`
  return url.split('/').slice(-2).join('/')
}

const totals = new Map()
let busy = 0
for (const node of profile.nodes) {
  const ms = selfMs.get(node.id) ?? 0
  const name = category(node)
  totals.set(name, (totals.get(name) ?? 0) + ms)
  if (name !== 'idle' && name !== 'start-up') busy += ms
}
const n = Number(requests ?? 0)
console.log(`busy (not idle, not start-up): ${busy.toFixed(0)} ms${n > 0 ? `, ${(busy * 1000 / n).toFixed(1)} µs per request` : ''}`)
for (const [name, ms] of [...totals].sort((a, b) => b[1] - a[1])) {
  if (name === 'idle' || name === 'start-up' || ms / busy < 0.005) continue
  console.log(`${(ms / busy * 100).toFixed(1).padStart(5)}%${n > 0 ? `  ${(ms * 1000 / n).toFixed(2).padStart(6)} µs` : ''}  ${name}`)
}
