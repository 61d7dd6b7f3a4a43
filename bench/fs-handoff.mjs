// What one fdatasync costs the JavaScript thread, apart from the disk: `node bench/fs-handoff.mjs`.
// A commit hands its fdatasync to libuv's thread pool and is woken when it is done; on a virtual
// machine each hand-off and wake-up costs the JavaScript thread tens of µs of CPU (futex and
// eventfd system calls), which single-event ingestion pays once per commit. Measured here as CPU
// time of the main thread (from /proc) per operation, next to the wall time.
import { readFileSync } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const N = Number(process.env.HANDOFF_N ?? 2000)
function mainThreadCpuMs () {
  const text = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

const path = join(tmpdir(), `evs-handoff-${process.pid}`)
const handle = await open(path, 'w')
const line = Buffer.alloc(600, 97)
async function measure (name, op) {
  const cpu = mainThreadCpuMs()
  const wall = performance.now()
  for (let i = 0; i < N; i++) await op()
  console.log(`${name.padEnd(36)} JavaScript thread ${((mainThreadCpuMs() - cpu) * 1000 / N).toFixed(1).padStart(6)} µs CPU, ${((performance.now() - wall) * 1000 / N).toFixed(0).padStart(5)} µs wall per operation`)
}
try {
  await measure('write (thread pool)', async () => { await handle.write(line) })
  await measure('write + fdatasync (thread pool)', async () => { await handle.write(line); await handle.datasync() })
} finally {
  await handle.close()
  await rm(path, { force: true })
}
