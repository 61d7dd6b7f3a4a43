import { describe, expect, it } from 'vitest'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { onCleanup } from './helpers.js'
import { startStallProxy } from './stall-proxy.js'

/** A TCP server that answers every line with the line, upper-cased. */
async function echo (): Promise<{ port: number, connections: () => number }> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', (chunk) => socket.write(chunk.toString().toUpperCase()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onCleanup(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { port: (server.address() as { port: number }).port, connections: () => sockets.size }
}

interface Client {
  socket: Socket
  /** Resolves with the next bytes received, `closed: <code>` when the connection ends, or `silence` after `ms`. */
  next(ms?: number): Promise<string>
}

async function client (port: number): Promise<Client> {
  const socket = connect(port, '127.0.0.1')
  const received: string[] = []
  let wake: (() => void) | undefined
  socket.on('data', (chunk) => { received.push(chunk.toString()); wake?.() })
  socket.on('error', (err: NodeJS.ErrnoException) => { received.push(`closed: ${err.code ?? err.message}`); wake?.() })
  socket.on('close', () => { received.push('closed: close'); wake?.() })
  onCleanup(async () => { socket.destroy() })
  await new Promise<void>((resolve) => { socket.once('connect', resolve); socket.once('error', () => resolve()) })
  return {
    socket,
    async next (ms = 2000) {
      if (received.length === 0) {
        let timer: NodeJS.Timeout | undefined
        await new Promise<void>((resolve) => {
          wake = resolve
          timer = setTimeout(resolve, ms)
        })
        clearTimeout(timer)
        wake = undefined
      }
      return received.shift() ?? 'silence'
    }
  }
}

describe('stall proxy (test helper)', () => {
  it('passes through, stalls both ways, resumes, refuses, cuts, and closes everything it opened', async () => {
    const upstream = await echo()
    const resources = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length
    const proxy = await startStallProxy(upstream.port)

    const a = await client(proxy.port)
    a.socket.write('one')
    expect(await a.next()).toBe('ONE')

    // Stalled: an open connection forwards nothing, a new one is accepted and never answered.
    proxy.stall()
    a.socket.write('two')
    expect(await a.next(300)).toBe('silence')
    const b = await client(proxy.port)
    b.socket.write('three')
    expect(await b.next(300)).toBe('silence')
    expect(proxy.accepted).toBe(2)
    expect(upstream.connections()).toBe(1) // the stalled new connection never reached the store

    // Passing again: what was held goes through.
    proxy.pass()
    expect(await a.next()).toBe('TWO')
    expect(await b.next()).toBe('THREE')
    expect(upstream.connections()).toBe(2)

    // Refusing: new connections are reset at once; open ones still work.
    proxy.refuse()
    const c = await client(proxy.port)
    expect(await c.next()).toMatch(/^closed: (ECONNRESET|close)$/)
    a.socket.write('four')
    expect(await a.next()).toBe('FOUR')

    // Cut: every open connection is reset, on both sides.
    proxy.cut()
    expect(await a.next()).toMatch(/^closed: (ECONNRESET|close)$/)
    expect(await b.next()).toMatch(/^closed: (ECONNRESET|close)$/)
    expect(proxy.open).toBe(0)

    proxy.pass()
    const d = await client(proxy.port)
    d.socket.write('five')
    expect(await d.next()).toBe('FIVE')
    await proxy.close()
    expect(await d.next()).toMatch(/^closed: (ECONNRESET|close)$/)
    for (const x of [a, b, c, d]) x.socket.destroy()
    // Every socket and server the proxy opened is gone (closing sockets take a turn of the loop).
    const tcp = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length
    for (let i = 0; i < 100 && tcp() !== resources; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    expect(tcp()).toBe(resources)
    expect(upstream.connections()).toBe(0)
  })
})
