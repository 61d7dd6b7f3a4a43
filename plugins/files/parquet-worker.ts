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

port.on('message', (request: ConvertRequest) => {
  convertSpoolFile(request.input, request.output, request.options).then(
    (result) => { port.postMessage({ id: request.id, result }) },
    (err: NodeJS.ErrnoException & { permanent?: boolean }) => {
      port.postMessage({ id: request.id, error: { message: err.message, code: err.code, permanent: err.permanent === true, name: err.name } })
    })
})
