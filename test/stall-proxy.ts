import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * - `pass`: forwards both ways (connections held by `stall` start flowing again).
 * - `stall`: accepts connections and never answers; open connections stop forwarding either way.
 * - `refuse`: new connections are reset at once (what a stopped store looks like).
 */
export type StallMode = 'pass' | 'stall' | 'refuse'

export interface StallProxy {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string
  readonly port: number
  readonly mode: StallMode
  /** Connections accepted so far, whatever became of them. */
  readonly accepted: number
  /** Connections open now. */
  readonly open: number
  pass(): void
  stall(): void
  refuse(): void
  /** Resets every open connection (both sides); the mode is unchanged. */
  cut(): void
  /** Stops listening and resets every connection. */
  close(): Promise<void>
}

interface Link {
  readonly client: Socket
  upstream: Socket | undefined
}

/**
 * A TCP proxy on 127.0.0.1 in front of `upstreamPort` that can be made to hang, refuse or cut
 * connections: a store that accepts connections and never answers, without touching the store.
 * It opens no timer; every socket it opens is destroyed by `cut` or `close`.
 */
export async function startStallProxy (upstreamPort: number, initial: StallMode = 'pass'): Promise<StallProxy> {
  let mode: StallMode = initial
  let accepted = 0
  const links = new Set<Link>()

  const drop = (link: Link): void => {
    if (!links.delete(link)) return
    link.client.destroy()
    link.upstream?.destroy()
  }

  const flowing = (link: Link): void => {
    const { client, upstream } = link
    if (upstream === undefined || mode !== 'pass') return
    client.resume()
    upstream.resume()
  }

  const forward = (link: Link, from: Socket, to: Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause()
    })
    to.on('drain', () => { if (mode === 'pass') from.resume() })
    from.on('end', () => to.end())
  }

  const open = (link: Link): void => {
    const upstream = connect(upstreamPort, '127.0.0.1')
    link.upstream = upstream
    upstream.pause()
    upstream.on('error', () => drop(link))
    upstream.on('close', () => drop(link))
    upstream.once('connect', () => {
      forward(link, link.client, upstream)
      forward(link, upstream, link.client)
      flowing(link)
    })
  }

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++
    client.on('error', () => {})
    if (mode === 'refuse') {
      client.resetAndDestroy()
      return
    }
    const link: Link = { client, upstream: undefined }
    links.add(link)
    client.on('close', () => drop(link))
    // A stalled connection is not even opened upstream: the store never hears of it.
    if (mode === 'pass') open(link)
  })
  server.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as { port: number }).port

  const setMode = (next: StallMode): void => {
    mode = next
    for (const link of links) {
      if (next === 'pass') {
        if (link.upstream === undefined) open(link)
        else flowing(link)
      } else if (next === 'stall') {
        link.client.pause()
        link.upstream?.pause()
      }
    }
  }

  const cut = (): void => {
    for (const link of [...links]) {
      links.delete(link)
      link.client.resetAndDestroy()
      link.upstream?.resetAndDestroy()
    }
  }

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get mode () { return mode },
    get accepted () { return accepted },
    get open () { return links.size },
    pass: () => setMode('pass'),
    stall: () => setMode('stall'),
    refuse: () => setMode('refuse'),
    cut,
    async close () {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      cut()
      await closed
    }
  }
}
