import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { EVS_ERR_REQUEST_HEADERS_TOO_LARGE, EVS_ERR_REQUEST_MALFORMED, EVS_ERR_REQUEST_TIMEOUT } from './errors.js'
import type { Metrics } from './metrics.js'
import { RejectionLog } from './rejection-log.js'

type ClientError = Error & { code?: string }
type ClientErrorHandler = (this: FastifyInstance, err: ClientError, socket: Socket) => void

/**
 * Fastify's clientErrorHandler: what Node's HTTP parser refuses before a request exists (a request
 * line or header that is not HTTP, headers past Node's size limit, headers or a whole request that
 * took too long) is answered as every other refusal is, with its EVS_ERR_ code and a reason,
 * counted in evs_requests_rejected_total and logged (rate-limited; never the bytes sent, which may
 * hold a key).
 */
export function clientErrorHandler (metrics: Metrics, now: () => number): ClientErrorHandler {
  let rejections: RejectionLog | undefined
  return function (err, socket) {
    // A reset leaves nobody to answer; nor does a socket already gone.
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const error = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new EVS_ERR_REQUEST_TIMEOUT()
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? new EVS_ERR_REQUEST_HEADERS_TOO_LARGE()
        : new EVS_ERR_REQUEST_MALFORMED(err.code ?? 'unreadable')
    const statusCode = error.statusCode as number
    metrics.requestsRejected.add(error.code)
    rejections ??= new RejectionLog(this.log, now, 'info', 'request refused before it was read')
    rejections.log({ code: error.code, statusCode, parserCode: err.code, ip: socket.remoteAddress }, error.message)
    // Node's own rule: no answer once a response to this connection has begun (a request timeout
    // that strikes while an answer is being written), only the close.
    const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (socket.writable && response?.headersSent !== true) {
      const body = JSON.stringify({ statusCode, code: error.code, error: error.message })
      socket.write(`HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    }
    socket.destroy(err)
  }
}
