// A dss-event-server started from `<dir>/settings.json` as its own process, on a free loopback
// port, for the benchmarks that compare servers side by side (bench/integrity.mjs,
// bench/parquet-ingest.mjs).
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'dss-event-server.js')

export function startServerProcess (dir) {
  const child = spawn(process.execPath, [bin, 'start', '--config', join(dir, 'settings.json'), '--host', '127.0.0.1', '--port', '0'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (c) => { output += c })
  child.stderr.on('data', (c) => { output += c })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)))
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start: ${output}`)), 30000)
    child.stdout.on('data', () => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (m) { clearTimeout(timer); resolve(m[1]) }
    })
    exited.then((code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${output}`)) })
  })
  return { child, url, exited, output: () => output }
}
