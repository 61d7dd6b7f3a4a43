import { expect } from 'vitest'
import { DuckDBInstance } from '@duckdb/node-api'
import type { FastifyInstance } from 'fastify'
import { UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from '../core/router.js'

/** A row of a Parquet file the server wrote, as DuckDB (an independent reader) reads it. */
export interface ParquetRow {
  file: string
  serverTimestamp: number
  origAddress: string
  topic: string
  routingKey: string
  msgType: string | null
  authUser: string | null
  authSource: string | null
  clientIP: string | null
  projectKey: string | null
  clientEvent: string
}

/** Reads every row of the files, with the name of the file each comes from. */
export async function readParquet (paths: string[]): Promise<ParquetRow[]> {
  if (paths.length === 0) return []
  const instance = await DuckDBInstance.create(':memory:')
  const connection = await instance.connect()
  try {
    const list = paths.map((p) => `'${p.replaceAll("'", "''")}'`).join(', ')
    const reader = await connection.runAndReadAll(`
      SELECT filename AS file, epoch_ms(serverTimestamp)::DOUBLE AS serverTimestamp, origAddress, topic, routingKey,
             msgType, authUser, authSource, clientIP, projectKey, clientEvent::VARCHAR AS clientEvent
      FROM read_parquet([${list}], filename = true)`)
    return reader.getRowObjectsJS() as unknown as ParquetRow[]
  } finally {
    connection.closeSync()
    instance.closeSync()
  }
}

/** The encodings of each column chunk of one file, as DuckDB reports them. */
export async function parquetEncodings (path: string): Promise<Array<{ column: string, encodings: string }>> {
  const instance = await DuckDBInstance.create(':memory:')
  const connection = await instance.connect()
  try {
    const file = `'${path.replaceAll("'", "''")}'`
    return (await connection.runAndReadAll(`SELECT path_in_schema AS column, encodings FROM parquet_metadata(${file})`)).getRowObjectsJS() as Array<{ column: string, encodings: string }>
  } finally {
    connection.closeSync()
    instance.closeSync()
  }
}

/** Column types, and the key-value metadata, of one file. */
export async function parquetSchemaOf (path: string): Promise<{ columns: Record<string, string>, metadata: Record<string, string> }> {
  const instance = await DuckDBInstance.create(':memory:')
  const connection = await instance.connect()
  try {
    const file = `'${path.replaceAll("'", "''")}'`
    const columns = (await connection.runAndReadAll(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(${file}))`)).getRowObjectsJS() as Array<{ column_name: string, column_type: string }>
    const metadata = (await connection.runAndReadAll(`SELECT decode(key) AS key, decode(value) AS value FROM parquet_kv_metadata(${file})`)).getRowObjectsJS() as Array<{ key: string, value: string }>
    return {
      columns: Object.fromEntries(columns.map((c) => [c.column_name, c.column_type])),
      metadata: Object.fromEntries(metadata.map((m) => [m.key, m.value]))
    }
  } finally {
    connection.closeSync()
    instance.closeSync()
  }
}

interface Case {
  /** The request body: one event (or a JSON array holding one, pretty-printed). */
  body: string
  topic: string
  routingKey: string
  common: Partial<Record<'msgType' | 'authUser' | 'authSource' | 'clientIP' | 'projectKey', string | null>>
  /** The event as the files hold it, when it differs from the body. */
  text?: string
}

let deep = '{"id":3,"level":0}'
for (let i = 1; i <= 200; i++) deep = `{"id":3,"level":${i},"child":${deep.replace('"id":3,', '')}}`

/** Events that exercise the Parquet columns: unicode, nesting, large numbers, escapes, null and odd common fields. */
export const PARQUET_CASES: Case[] = [
  {
    body: '{"id":1,"topic":"generic","routingKey":"rk-1","msgType":"ünïcødé ✓ 日本語 😀","authUser":"zoë.lefèvre","authSource":"USER_FROM_UI","clientIP":"10.0.0.7","projectKey":"ÉTÉ_2026"}',
    topic: 'generic',
    routingKey: 'rk-1',
    common: { msgType: 'ünïcødé ✓ 日本語 😀', authUser: 'zoë.lefèvre', authSource: 'USER_FROM_UI', clientIP: '10.0.0.7', projectKey: 'ÉTÉ_2026' }
  },
  {
    body: '{"id":2,"topic":"apinode-query","routingKey":"rk/ключ \\"q\\"","msgType":"apinode-query","big":12345678901234567890123456789,"tiny":-1.5e-300,"precise":0.1000000000000000055511151231257827,"ints":[9007199254740993,-9007199254740993]}',
    topic: 'apinode-query',
    routingKey: 'rk/ключ "q"',
    common: { msgType: 'apinode-query' }
  },
  { body: deep.replace('{', '{"topic":"deep","msgType":"nested",'), topic: 'deep', routingKey: UNKNOWN_ROUTING_KEY, common: { msgType: 'nested' } },
  { body: '{"id":4,"topic":"generic","msgType":null,"authUser":null}', topic: 'generic', routingKey: UNKNOWN_ROUTING_KEY, common: {} },
  { body: '{"id":5}', topic: UNKNOWN_TOPIC, routingKey: UNKNOWN_ROUTING_KEY, common: {} },
  {
    body: '{"id":6,"topic":"generic","authUser":{"name":"x","roles":["a"]},"clientIP":["1.2.3.4", "5.6.7.8"],"projectKey":42,"authSource":true,"msgType":12345678901234567890}',
    topic: 'generic',
    routingKey: UNKNOWN_ROUTING_KEY,
    common: { authUser: '{"name":"x","roles":["a"]}', clientIP: '["1.2.3.4", "5.6.7.8"]', projectKey: '42', authSource: 'true', msgType: '12345678901234567890' }
  },
  {
    body: '{"id":7,"topic":"generic","msgType":"tab\\tquote\\"backslash\\\\ \\u0001 \\u2028 \\ud83d\\ude00","authUser":"a\\/b"}',
    topic: 'generic',
    routingKey: UNKNOWN_ROUTING_KEY,
    common: { msgType: 'tab\tquote"backslash\\ \u0001 \u2028 😀', authUser: 'a/b' }
  },
  { body: '{"id":8,"topic":"generic","msgType":"first","msgType":"last"}', topic: 'generic', routingKey: UNKNOWN_ROUTING_KEY, common: { msgType: 'last' } },
  {
    body: '[\n  {\n    "id": 9,\n    "topic": "generic",\n    "msgType": "pretty"\n  }\n]',
    text: '{     "id": 9,     "topic": "generic",     "msgType": "pretty"   }',
    topic: 'generic',
    routingKey: UNKNOWN_ROUTING_KEY,
    common: { msgType: 'pretty' }
  }
]

/** Posts every case, one request each; all must be acknowledged. */
export async function postParquetCases (app: FastifyInstance): Promise<void> {
  for (const c of PARQUET_CASES) {
    const res = await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: c.body })
    expect(res.statusCode, res.body).toBe(200)
  }
}

/** The event text of a line `{"clientEvent":…,"origAddress":…,"serverTimestamp":…}`, as written. */
export function rawClientEvent (line: string): string {
  return line.slice('{"clientEvent":'.length, line.lastIndexOf(',"origAddress":'))
}

/** `…+HHMM` as milliseconds since the epoch. */
export function parseServerTimestamp (text: string): number {
  return Date.parse(text.replace(/([+-]\d\d)(\d\d)$/, '$1:$2'))
}

/**
 * Every case is in the Parquet rows exactly once, with the values of its twin line in the JSON-lines
 * output (same event, same server): clientEvent the same text, byte for byte, as the line holds and
 * as it was sent; the timestamp and address the line's; topic, routing key and common fields as sent.
 */
export function expectCasesMatch (rows: ParquetRow[], jsonLines: string[]): void {
  const id = (text: string): number => (JSON.parse(text) as { id: number }).id
  const byId = new Map<number, ParquetRow[]>()
  for (const row of rows) byId.set(id(row.clientEvent), [...(byId.get(id(row.clientEvent)) ?? []), row])
  const lines = new Map(jsonLines.map((line) => [id(rawClientEvent(line)), line]))
  expect(rows).toHaveLength(PARQUET_CASES.length)
  PARQUET_CASES.forEach((c, i) => {
    const found = byId.get(id(c.text ?? c.body.replace(/^\[\s*|\s*\]$/g, ''))) ?? []
    expect(found, `case ${i + 1}`).toHaveLength(1)
    const row = found[0] as ParquetRow
    const line = lines.get(id(row.clientEvent)) as string
    const record = JSON.parse(line) as { origAddress: string, serverTimestamp: string }
    expect(row.clientEvent).toBe(rawClientEvent(line))
    expect(row.clientEvent).toBe(c.text ?? c.body)
    expect(row.serverTimestamp).toBe(parseServerTimestamp(record.serverTimestamp))
    expect(row.origAddress).toBe(record.origAddress)
    expect({ topic: row.topic, routingKey: row.routingKey }).toEqual({ topic: c.topic, routingKey: c.routingKey })
    expect({ msgType: row.msgType, authUser: row.authUser, authSource: row.authSource, clientIP: row.clientIP, projectKey: row.projectKey })
      .toEqual({ msgType: null, authUser: null, authSource: null, clientIP: null, projectKey: null, ...c.common })
  })
}
