// The ceiling: a bare Fastify server on the same Node.js that parses each body and answers 200,
// with no I/O. Whatever dss-event-server does on top costs throughput relative to this.
import Fastify from 'fastify'
import { gunzip } from 'node:zlib'
import { promisify } from 'node:util'

const gunzipAsync = promisify(gunzip)
const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 })

app.addContentTypeParser('application/x-ndjson', { parseAs: 'buffer' }, async (request, body) => {
  const data = request.headers['content-encoding'] === 'gzip' ? await gunzipAsync(body) : body
  return data.toString('utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))
})
app.removeContentTypeParser('application/json')
app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (request, body) => {
  const data = request.headers['content-encoding'] === 'gzip' ? await gunzipAsync(body) : body
  return JSON.parse(data.toString('utf8'))
})
const handler = async (request) => ({ status: 'ok', received: Array.isArray(request.body) ? request.body.length : 1 })
app.post('/events', handler)
app.post('/events/*', handler)

const address = await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`listening ${address}\n`)
process.on('SIGTERM', () => { app.close().then(() => process.exit(0)) })
