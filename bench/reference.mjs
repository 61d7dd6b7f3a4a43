// The references: bare Fastify on the same Node.js, no I/O, answering 200 with a body of the
// server's size. `node bench/reference.mjs raw` reads each body and does not parse it (the HTTP
// limit of Node here); `node bench/reference.mjs parse` runs JSON.parse on it (after gunzip for a
// gzip body; line by line for NDJSON).
import Fastify from 'fastify'
import { gunzip } from 'node:zlib'
import { promisify } from 'node:util'

const mode = process.argv[2]
if (mode !== 'raw' && mode !== 'parse') throw new Error('usage: node bench/reference.mjs raw|parse')
const gunzipAsync = promisify(gunzip)
const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 })
app.removeAllContentTypeParsers()

if (mode === 'raw') {
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })
} else {
  const decoded = async (request, body) => request.headers['content-encoding'] === 'gzip' ? await gunzipAsync(body) : body
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (request, body) => JSON.parse((await decoded(request, body)).toString('utf8')))
  app.addContentTypeParser('application/x-ndjson', { parseAs: 'buffer' }, async (request, body) => {
    return (await decoded(request, body)).toString('utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))
  })
}

const handler = async (request, reply) => {
  const n = mode === 'raw' ? 1 : Array.isArray(request.body) ? request.body.length : 1
  return await reply.header('content-type', 'application/json; charset=utf-8').send(`{"status":"ok","received":${n},"routed":${n}}`)
}
app.post('/events', handler)
app.post('/events/*', handler)
app.post('/*', handler)

const address = await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`listening ${address}\n`)
process.on('SIGTERM', () => { app.close().then(() => process.exit(0)) })
