import { readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'
import { parentPort } from 'node:worker_threads'
import { convertSpoolFile, type ConvertOptions } from './parquet.js'

/** The worker thread of converter.ts: converts one spool file per message, one at a time. */
export interface ConvertRequest {
  id: number
  input: string
  output: string
  options: ConvertOptions
}

const port = parentPort
if (port === null) throw new Error('parquet-worker.js runs as a worker thread')

// Conversion is background work: at the lowest CPU priority, it takes the time that ingestion does
// not want instead of slowing it (the sustained rate still covers catching up). Linux: a thread's
// id names it for setpriority(); elsewhere this just fails.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop())
  if (Number.isInteger(tid)) setPriority(tid, 19)
} catch {}

port.on('message', (request: ConvertRequest) => {
  convertSpoolFile(request.input, request.output, request.options).then(
    (result) => { port.postMessage({ id: request.id, result }) },
    (err: NodeJS.ErrnoException & { permanent?: boolean }) => {
      port.postMessage({ id: request.id, error: { message: err.message, code: err.code, permanent: err.permanent === true, name: err.name } })
    })
})
