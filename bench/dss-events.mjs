// DSS-like audit events for size and speed measurements (bench/parquet-*.mjs, test/parquet-*.test.ts).
// Deterministic for a seed: a busy install's mix of UI audit events, auth failures, compute usage,
// and API node queries (the large ones), with the repetition real audit trails have (a few dozen
// users, projects and addresses) and the variety they have too (ids, timings, feature values).

function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const USERS = ['admin', 'data.scientist', 'j.doe', 'a.martin', 'zoë.lefèvre', 'k.tanaka', 'etl-bot', 'm.rossi', 'p.nowak', 's.müller',
  'r.garcia', 'l.chen', 'api-deployer', 'o.ivanova', 'f.dubois', 'n.smith', 'h.yilmaz', 'c.silva', 'scheduler', 'b.kowalski']
const PROJECTS = ['CUSTOMER_CHURN', 'FRAUD_DETECTION', 'SALES_FORECAST', 'MARKETING_ATTRIBUTION', 'SUPPLY_CHAIN', 'HR_ANALYTICS',
  'RISK_SCORING', 'CLICKSTREAM', 'PRICING', 'DATA_QUALITY', 'FINANCE_CLOSE', 'IOT_SENSORS']
const GENERIC = [
  ['dataset-read-data', '/dip/api/datasets/get-sample', 'DatasetsController.getSample'],
  ['dataset-write-data', '/dip/api/datasets/write', 'DatasetsController.write'],
  ['project-open', '/dip/api/projects/get-summary', 'ProjectsController.getSummary'],
  ['recipe-run', '/dip/api/flow/recipes/run', 'RecipesController.run'],
  ['scenario-run', '/dip/api/scenarios/run', 'ScenariosController.run'],
  ['application-open', '/dip/api/home/get-home', 'HomeController.getHome'],
  ['notebook-save', '/dip/api/jupyter/save', 'JupyterController.save'],
  ['savedmodel-train', '/dip/api/analysis/ml/train', 'MLController.train'],
  ['connection-read', '/dip/api/connections/get', 'ConnectionsController.get'],
  ['api-key-used', '/public/api/projects/datasets/data', 'PublicAPIController.getData']
]
const SERVICES = [
  { id: 'churn-predictor', endpoint: 'predict', features: 38 },
  { id: 'fraud-score', endpoint: 'score', features: 64 },
  { id: 'price-optimizer', endpoint: 'optimize', features: 22 },
  { id: 'demand-forecast', endpoint: 'forecast', features: 51 },
  { id: 'text-classifier', endpoint: 'classify', features: 6 }
]
const COUNTRIES = ['FR', 'DE', 'US', 'JP', 'BR', 'IN', 'GB', 'ES', 'IT', 'PL']
const SEGMENTS = ['retail', 'sme', 'corporate', 'premium', 'student']

const pick = (rand, list) => list[Math.floor(rand() * list.length)]
const hex = (rand, n) => { let s = ''; for (let i = 0; i < n; i++) s += Math.floor(rand() * 16).toString(16); return s }
const ip = (rand, pool) => `10.${pool}.${Math.floor(rand() * 4)}.${10 + Math.floor(rand() * 20)}`
const uuid = (rand) => `${hex(rand, 8)}-${hex(rand, 4)}-4${hex(rand, 3)}-a${hex(rand, 3)}-${hex(rand, 12)}`

function context (rand, user) {
  const address = ip(rand, 3)
  return {
    authUser: user,
    authSource: user.endsWith('-bot') || user === 'scheduler' ? 'API_KEY' : 'USER_FROM_UI',
    authVia: user.endsWith('-bot') ? ['PERSONAL_API_KEY'] : ['SESSION_COOKIE'],
    clientIP: address,
    originalIP: address,
    xForwardedFor: [address, '10.0.0.2'],
    callPath: []
  }
}

function generic (rand, t) {
  const [msgType, path, method] = pick(rand, GENERIC)
  const user = pick(rand, USERS)
  const event = {
    msgType,
    ...context(rand, user),
    projectKey: pick(rand, PROJECTS),
    sessionId: hex(rand, 16),
    requestId: uuid(rand),
    details: { durationMs: Math.floor(rand() * 2000), outcome: rand() < 0.97 ? 'SUCCESS' : 'FAILED', rows: Math.floor(rand() * 1e6) }
  }
  event.callPath = [path, `com.dataiku.dip.server.controllers.${method}`]
  if (msgType.startsWith('dataset')) {
    event.datasetName = `${pick(rand, ['customers', 'orders', 'events', 'sensors', 'invoices'])}_${pick(rand, ['prepared', 'joined', 'scored', 'raw'])}`
    event.details.sampling = pick(rand, ['HEAD_SEQUENTIAL', 'RANDOM_FIXED_NB', 'FULL'])
  }
  if (msgType === 'scenario-run') event.trigger = { type: pick(rand, ['temporal', 'manual', 'dataset-change']), at: t }
  return { topic: 'generic', routingKey: 'design-node-1', event }
}

function authFail (rand) {
  const user = rand() < 0.5 ? pick(rand, USERS) : undefined
  const event = {
    msgType: 'auth-failed',
    authSource: 'USER_FROM_UI',
    clientIP: ip(rand, 9),
    callPath: ['/dip/api/login'],
    result: 'FAILED',
    errorType: 'UnauthorizedException',
    errorMsg: 'Invalid login or password'
  }
  if (user !== undefined) event.authUser = user
  return { topic: 'authfail', routingKey: 'design-node-1', event }
}

function computeUsage (rand, t) {
  const user = pick(rand, USERS)
  return {
    topic: 'compute-resource-usage',
    routingKey: 'automation-node-1',
    event: {
      msgType: 'compute-resource-usage-complete',
      authUser: user,
      projectKey: pick(rand, PROJECTS),
      usage: {
        type: pick(rand, ['LOCAL_PROCESS', 'SQL_QUERY', 'KUBERNETES_JOB']),
        startTime: t - Math.floor(rand() * 600000),
        endTime: t,
        cpu: { totalCPU_user: Math.floor(rand() * 1e7), totalCPU_system: Math.floor(rand() * 1e6), peakRSS: Math.floor(rand() * 4e9) },
        context: { type: 'JOB_ACTIVITY', projectKey: pick(rand, PROJECTS), jobId: `Build_${hex(rand, 8)}`, activityId: `compute_${hex(rand, 6)}_NP` }
      }
    }
  }
}

function apinodeQuery (rand, t) {
  const service = pick(rand, SERVICES)
  const features = {}
  for (let i = 0; i < service.features; i++) {
    const kind = i % 4
    features[`f${i}_${['amount', 'count', 'country', 'segment'][kind]}`] = kind === 0
      ? Math.round(rand() * 1e6) / 100
      : kind === 1 ? Math.floor(rand() * 500) : kind === 2 ? pick(rand, COUNTRIES) : pick(rand, SEGMENTS)
  }
  const probas = { yes: Math.round(rand() * 1e4) / 1e4 }
  probas.no = Math.round((1 - probas.yes) * 1e4) / 1e4
  return {
    topic: 'apinode-query',
    routingKey: `rk-${service.id}-1`,
    event: {
      msgType: 'apinode-query',
      clientIP: ip(rand, 7),
      authVia: ['API_KEY'],
      serviceId: service.id,
      endpointId: service.endpoint,
      serviceGenerationId: `v${1 + Math.floor(rand() * 4)}`,
      apinodeQueryType: 'predict',
      queryId: uuid(rand),
      timing: { preProcessing: Math.floor(rand() * 900), prediction: Math.floor(rand() * 9000), postProcessing: Math.floor(rand() * 300), wait: Math.floor(rand() * 50), timestamp: t },
      features,
      result: { prediction: probas.yes > 0.5 ? 'yes' : 'no', probaPercentile: Math.floor(rand() * 100), probas, explanations: { f0_amount: Math.round((rand() - 0.5) * 1e4) / 1e4, f2_country: Math.round((rand() - 0.5) * 1e4) / 1e4 } }
    }
  }
}

/**
 * `count` events as `{ topic, routingKey, text }`, `text` being the JSON a node would send. About 1 KB
 * on average: 70% generic (about 600 bytes), 20% apinode-query (about 1 to 3 KB), 5% auth failures,
 * 5% compute usage. Event times start at `startMs` and advance a few milliseconds each.
 */
export function dssEvents (count, seed = 1, startMs = Date.UTC(2026, 10, 26, 2, 0, 0)) {
  const rand = prng(seed)
  const out = []
  let t = startMs
  for (let i = 0; i < count; i++) {
    t += Math.floor(rand() * 20)
    const r = rand()
    const { topic, routingKey, event } = r < 0.70 ? generic(rand, t) : r < 0.90 ? apinodeQuery(rand, t) : r < 0.95 ? authFail(rand) : computeUsage(rand, t)
    out.push({ topic, routingKey, at: t, text: JSON.stringify(event) })
  }
  return out
}

const pad = (n, w = 2) => String(n).padStart(w, '0')
/** What ZonedTime.timestamp writes for `ms` in UTC. */
export function serverTimestamp (ms) {
  const d = new Date(ms)
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}+0000`
}

/** The line a jsonl destination writes for an event. */
export function jsonLine (e, address = '10.0.0.12') {
  return `{"clientEvent":${e.text},"origAddress":${JSON.stringify(address)},"serverTimestamp":"${serverTimestamp(e.at)}"}\n`
}
