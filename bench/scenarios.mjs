// The bench's request bodies and scenarios. "__SEQ__" in a body becomes a unique number per event,
// so that the lines written can be checked by id (none missing, none twice).
import { gzipSync } from 'node:zlib'

export const SEQ_MARK = '__SEQ__'

// A DSS audit message of about 600 bytes.
export const DSS_EVENT = {
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
  seq: 0
}
const eventText = (seq) => JSON.stringify({ ...DSS_EVENT, seq }).replace(`"seq":${JSON.stringify(seq)}`, `"seq":${seq}`)

/** Request bodies by shape: `unique` ones carry a SEQ_MARK per event. */
export const SHAPES = {
  single: { body: Buffer.from(eventText(SEQ_MARK)), contentType: 'application/json', events: 1, unique: true },
  array: { body: Buffer.from(`[${Array.from({ length: 100 }, () => eventText(SEQ_MARK)).join(',')}]`), contentType: 'application/json', events: 100, unique: true },
  // Compressed once: every request sends the same bytes, so lines are counted, not checked by id.
  ndjson: { body: gzipSync(Array.from({ length: 1000 }, (_, i) => eventText(i)).join('\n') + '\n'), contentType: 'application/x-ndjson', gzip: true, events: 1000, unique: false }
}

/**
 * `reference` names the bare-Fastify reference a target of the issue compares with ('raw': body
 * read, not parsed; 'parse': JSON.parse, after gunzip for gzip bodies).
 */
export const SCENARIOS = [
  { id: 'a', load: '1 event/request, 50 conns', mode: 'fsync', shape: 'single', connections: 50, destination: {} },
  { id: 'b', load: '1 event/request, 50 conns', mode: 'durability: write', shape: 'single', connections: 50, destination: { durability: 'write' } },
  { id: 'c', load: 'arrays of 100, 20 conns', mode: 'fsync', shape: 'array', connections: 20, destination: {} },
  { id: 'd', load: 'arrays of 100, 20 conns', mode: 'durability: write', shape: 'array', connections: 20, destination: { durability: 'write' } },
  { id: 'e', load: 'gzip NDJSON of 1,000, 10 conns', mode: 'fsync', shape: 'ndjson', connections: 10, destination: {} },
  { id: 'f', load: '1 event/request to 5,000 routing keys, 50 conns', mode: 'commit log', shape: 'single', connections: 50, routingKeys: 5000, destination: { maxOpenFiles: 256, commitLog: true } },
  // Not run by default (BENCH_ONLY=s3): the S3 path through the spool, against s3rver.
  { id: 's3', load: '1 event/request, 50 conns', mode: 'to S3 (s3rver) via the spool', shape: 'single', connections: 50, destination: { flushEveryBytes: 8 * 1024 * 1024, uploadShutdownGraceS: 300 }, s3: true, optional: true }
]

/** A scenario's name: its requests, and for our own server, its settings. */
export const scenarioName = (scenario, target) => target ? scenario.load : `${scenario.load}, ${scenario.mode}`

/** With --target, the server's settings are not ours: scenarios that differ only by them run once. */
export const TARGET_SCENARIOS = ['a', 'c', 'e', 'f']

export const CONNECTION_SWEEP = [1, 10, 50, 200, 1000]
export const ROUTING_KEY_SWEEP = [1, 100, 5000, 50000]
