import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { Socket } from 'node:net'
import { Transform } from 'node:stream'
import { EVS_ERR_CONNECTION_TIMEOUT, Type } from '../core/plugin-api.js'

// A store that accepts connections and never answers must not hold an upload slot forever: the
// upload fails, is retried with backoff, and goes through once the store answers again.
export const ConnectTimeoutS = Type.Number({ default: 10, exclusiveMinimum: 0, description: 'longest wait to open a connection to the store' })
export const IdleTimeoutS = Type.Number({
  default: 60,
  exclusiveMinimum: 0,
  description: 'a request that sends and receives nothing for this long fails and is retried; a large upload that keeps moving is never cut'
})

export interface StoreTimeouts {
  connectTimeoutS: number
  idleTimeoutS: number
}

export function connectTimeout (connection: string, seconds: number): Error {
  return new EVS_ERR_CONNECTION_TIMEOUT(connection, `no connection to the store within ${seconds} s (connectTimeoutS)`)
}

export function idleTimeout (connection: string, seconds: number): Error {
  return new EVS_ERR_CONNECTION_TIMEOUT(connection, `the store sent and received nothing for ${seconds} s (idleTimeoutS)`)
}

type CreateConnection = (...args: unknown[]) => Socket

/**
 * An HTTP(S) keep-alive agent whose sockets fail when connecting takes longer than
 * `connectTimeoutS`, or when nothing is sent or received for `idleTimeoutS`: the SDK using it
 * sees a socket error (EVS_ERR_CONNECTION_TIMEOUT) and the upload is retried later.
 */
export function timedAgent (protocol: string, connection: string, timeouts: StoreTimeouts): HttpAgent {
  const idleMs = timeouts.idleTimeoutS * 1000
  const secure = protocol === 'https:'
  // `timeout` is what the agent puts back on a socket each time it returns to the pool.
  const agent = secure ? new HttpsAgent({ keepAlive: true, timeout: idleMs }) : new HttpAgent({ keepAlive: true, timeout: idleMs })
  const target = agent as unknown as { createConnection: CreateConnection }
  const create = target.createConnection.bind(agent)
  target.createConnection = (...args: unknown[]): Socket => {
    const socket = create(...args)
    let connected = false
    socket.setTimeout(timeouts.connectTimeoutS * 1000)
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      connected = true
      socket.setTimeout(idleMs)
    })
    socket.on('timeout', () => {
      const err = connected ? idleTimeout(connection, timeouts.idleTimeoutS) : connectTimeout(connection, timeouts.connectTimeoutS)
      socket.destroy(err)
    })
    return socket
  }
  return agent
}

/**
 * Fails an upload whose body stops moving: the returned transform, put between the body and the
 * SDK's stream, passes bytes on and notes progress; `signal` aborts (reason: the timeout error)
 * when neither a byte moved nor the upload ended for `idleTimeoutS`. The SDK takes body bytes
 * only as fast as it sends them, so this is the same idle timeout as a socket's.
 */
export function progressWatchdog (connection: string, idleTimeoutS: number, caller?: AbortSignal): { progress: Transform, signal: AbortSignal, stop(): void } {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(idleTimeout(connection, idleTimeoutS)), idleTimeoutS * 1000)
  timer.unref()
  const progress = new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      timer.refresh()
      callback(null, chunk)
    }
  })
  return {
    progress,
    signal: caller !== undefined ? AbortSignal.any([caller, controller.signal]) : controller.signal,
    stop: () => clearTimeout(timer)
  }
}
