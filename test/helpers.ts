import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative, sep } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { Writable } from 'node:stream'
import { afterEach } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { buildServer, type BuildServerOptions } from '../index.js'

const cleanups: Array<() => Promise<void>> = []

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.()
})

export function onCleanup (fn: () => Promise<void>): void {
  cleanups.push(fn)
}

export async function tempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'evs-test-'))
  onCleanup(async () => await rm(dir, { recursive: true, force: true }))
  return dir
}

/** Settings for one filesystem connection at `<dir>/out` and one files destination over it. */
export function fsSettings (destination: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    server: { instanceId: 'test-1', ...(extra.server as object ?? {}) },
    connections: { local: { type: 'filesystem', root: './out' } },
    destinations: [{ name: 'all', connection: 'local', path: 'events', ...destination }],
    ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'server'))
  }
}

export interface LogCapture {
  lines: string[]
  text(): string
}

export function captureLogs (): { stream: Writable, logs: LogCapture } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''))
      done()
    }
  })
  return { stream, logs: { lines, text: () => lines.join('\n') } }
}

export async function start (options: BuildServerOptions & { document: unknown, baseDir: string }): Promise<FastifyInstance> {
  const app = await buildServer({ logger: false, ...options })
  onCleanup(async () => await app.close())
  return app
}

/** Every file below `root`, as `/`-separated paths relative to it. */
export async function listFiles (root: string): Promise<string[]> {
  let entries
  try {
    entries = await readdir(root, { recursive: true, withFileTypes: true })
  } catch {
    return []
  }
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)).split(sep).join('/'))
    .sort()
}

/** Lines of every `.jsonl` / `.jsonl.gz` file below `root`, parsed. */
export async function readEvents (root: string): Promise<Array<{ file: string, record: any }>> {
  const out: Array<{ file: string, record: any }> = []
  for (const file of await listFiles(root)) {
    if (!file.endsWith('.jsonl') && !file.endsWith('.jsonl.gz')) continue
    let data = await readFile(join(root, file))
    if (file.endsWith('.gz')) data = gunzipSync(data)
    const text = data.toString('utf8')
    if (text !== '' && !text.endsWith('\n')) throw new Error(`${file} does not end with a newline`)
    for (const line of text.split('\n')) if (line !== '') out.push({ file, record: JSON.parse(line) })
  }
  return out
}

export const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{4}$/
