import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { EVS_ERR_INTERNAL, EVS_ERR_ROUTE_NOT_FOUND } from './errors.js'
import type { Metrics } from './metrics.js'
import { RejectionLog } from './rejection-log.js'
import { pathOf } from './request-target.js'

/** How long the rest of a refused body is read and dropped before the connection is cut. */
const LINGER_MS = 2000

/**
 * For a request whose body was not read to its end (refused, timed out). Closing at once would
 * make the kernel reset the connection while the client still sends, and a reset can destroy the
 * answer before the client reads it. So the rest of the body is read and dropped for a moment,
 * then the connection is cut whatever the client does. A client that keeps its connection gets
 * the answer at once; one that will not (`Connection: close`, HTTP/1.0), which Node closes right
 * after the answer, gets it once its body is in or the moment is over: the returned promise.
 */
function lingerOnUnreadBody (request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined {
  const raw = request.raw
  const socket = raw.socket
  // Injected requests (light-my-request) have no real socket to linger on.
  if (raw.complete || socket === null || socket.destroyed || typeof socket.destroy !== 'function') return undefined
  // Fastify asks for "Connection: close" here, which makes Node close (and reset) right after the answer.
  reply.removeHeader('connection')
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
  raw.resume()
  if (reply.raw.shouldKeepAlive) return undefined
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(wait)
      resolve()
    }
    const wait = setTimeout(done, LINGER_MS - 250)
    raw.once('end', done)
    socket.once('close', done)
  })
}

/**
 * One error handler and one not-found handler for every route, the plugins' own included. Clients
 * get stable codes; a bug (an error without one) is logged with its stack, shown in /stats, and
 * answered with a generic message: its text may hold anything.
 */
export function installErrorHandling (fastify: FastifyInstance, metrics: Metrics, now: () => number): void {
  const rejections = new RejectionLog(fastify.log, now, 'info', 'request rejected')
  fastify.setErrorHandler(function (error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
    const url = pathOf(request.url)
    const answer = (): FastifyReply => {
      const ours = typeof error.code === 'string' && (error.code.startsWith('EVS_ERR_') || error.code.startsWith('FST_'))
      if (!ours || (error.code.startsWith('FST_') && (error.statusCode ?? 500) >= 500)) {
        const path = `${request.method} ${url}`
        metrics.error(error, path)
        request.log.error({ err: error, reqId: request.id }, `internal error on ${path}`)
        if (url.startsWith('/events')) metrics.requestsRejected.add('EVS_ERR_INTERNAL')
        const internal = new EVS_ERR_INTERNAL()
        return reply.code(500).send({ statusCode: 500, code: internal.code, error: internal.message })
      }
      const statusCode = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500
      if (url.startsWith('/events')) metrics.requestsRejected.add(error.code)
      rejections.log({ code: error.code, statusCode, method: request.method, url, ip: request.ip, reqId: request.id }, error.message)
      if (statusCode === 503) void reply.header('retry-after', '5')
      return reply.code(statusCode).send({ statusCode, code: error.code, error: error.message })
    }
    const lingering = lingerOnUnreadBody(request, reply)
    if (lingering === undefined) {
      answer()
      return
    }
    return lingering.then(answer)
  })

  // What an unknown client sends is worth seeing, but never its secrets or its body.
  const unmatched = new RejectionLog(fastify.log, now, 'warn', 'no route for this request')
  fastify.setNotFoundHandler(function (request: FastifyRequest, reply: FastifyReply) {
    const path = pathOf(request.url).slice(0, 200)
    unmatched.log({
      method: request.method,
      url: path,
      contentType: request.headers['content-type'],
      headerNames: Object.keys(request.headers),
      ip: request.ip,
      reqId: request.id
    }, `${request.method} ${path}`)
    const err = new EVS_ERR_ROUTE_NOT_FOUND(`${request.method} ${path}`)
    const answer = (): FastifyReply => reply.code(404).send({ statusCode: 404, code: err.code, error: err.message })
    const lingering = lingerOnUnreadBody(request, reply)
    if (lingering === undefined) {
      answer()
      return
    }
    return lingering.then(answer)
  })
}
