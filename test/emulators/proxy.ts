import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'

export interface RecordedRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: Buffer
}

export interface StoreProxy {
  readonly url: string
  /** Every request forwarded, in order. */
  readonly requests: RecordedRequest[]
  /** While true, one byte in the middle of each request body of at least 64 bytes is flipped on its way: a corrupted upload. */
  corrupt: boolean
  close(): Promise<void>
}

/**
 * An HTTP proxy on loopback in front of an emulator, for tests of what uploads carry: it records
 * each request and can corrupt bodies in transit, as a faulty network or disk would. The Host
 * header is kept, so that signatures and URLs the emulator builds from it still hold.
 */
export async function startProxy (target: string): Promise<StoreProxy> {
  const to = new URL(target)
  const requests: RecordedRequest[] = []
  const proxy = { requests, corrupt: false } as StoreProxy & { url: string }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      const sent = Buffer.from(body)
      if (proxy.corrupt && sent.length >= 64) sent[sent.length >> 1] = (sent[sent.length >> 1] as number) ^ 0x20
      const headers = { ...req.headers }
      if (headers['transfer-encoding'] !== undefined) {
        delete headers['transfer-encoding']
        headers['content-length'] = String(sent.length)
      }
      const forward = request({ hostname: to.hostname, port: to.port, method: req.method, path: req.url, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      forward.on('error', () => { res.destroy() })
      forward.end(sent)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  proxy.url = `http://127.0.0.1:${port}`
  proxy.close = async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  return proxy
}
