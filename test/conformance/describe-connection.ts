import { describe, expect, it, beforeEach, afterEach } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { canAppend, encodeSegment, type Connection } from '../../core/plugin-api.js'

export interface ConnectionTestContext {
  /** A fresh connection over an empty key space (its own folder, bucket prefix or container). */
  connection: Connection
}

export interface ConnectionUnderTest {
  create(): Promise<Connection>
  /**
   * A connection whose every use can be seen: pointed at `url` (a TCP server on loopback that
   * counts the connections made to it), or, for a local backend, rooted at `dir` (not made yet).
   */
  observed(target: { url: string, dir: string }): Connection
  cleanup?(connection: Connection): Promise<void>
  /** Size of the large streamed object; keep it above the backend's single-request upload size. */
  largeObjectBytes?: number
  /**
   * Why this server cannot list folders that hold only folders (no object directly inside): that
   * test is then reported as skipped, with the reason. The backend's own code is not at fault.
   */
  shallowFolderListing?: string
}

async function collect (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function keys (connection: Connection, prefix: string): Promise<Array<{ key: string, size: number }>> {
  const out: Array<{ key: string, size: number }> = []
  for await (const info of connection.list(prefix)) out.push(info)
  return out.sort((a, b) => a.key.localeCompare(b.key))
}

/** A deterministic stream of `total` bytes in chunks of 64 KiB, generated lazily. */
function generated (total: number): { stream: Readable, sha256: string } {
  const hash = createHash('sha256')
  const chunks: Buffer[] = []
  let produced = 0
  let i = 0
  while (produced < total) {
    const size = Math.min(65536, total - produced)
    const chunk = Buffer.alloc(size, (i++ % 251) + 1)
    chunk.writeUInt32BE(i, 0)
    hash.update(chunk)
    chunks.push(chunk)
    produced += size
  }
  return { stream: Readable.from(chunks), sha256: hash.digest('hex') }
}

/**
 * The contract every connection keeps. Each backend's test file calls this with a way to create
 * a connection against a real server, then adds its own checks.
 */
export function describeConnection (name: string, backend: ConnectionUnderTest): void {
  describe(`connection conformance: ${name}`, () => {
    const context = {} as ConnectionTestContext

    beforeEach(async () => {
      context.connection = await backend.create()
    })

    afterEach(async () => {
      await backend.cleanup?.(context.connection)
      await context.connection.close()
    })

    it('makes no network call or I/O at construction and declares its capabilities', async () => {
      const sockets: Socket[] = []
      const server = createServer((socket) => {
        sockets.push(socket)
        socket.destroy()
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      const parent = await mkdtemp(join(tmpdir(), 'evs-conformance-'))
      const dir = join(parent, 'root')
      const used = (): boolean => sockets.length > 0 || existsSync(dir)
      try {
        const connection = backend.observed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, dir })
        expect(typeof connection.capabilities.append).toBe('boolean')
        if (canAppend(connection)) expect(typeof connection.localPath).toBe('function')
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect(used()).toBe(false)
        // The observation works: the first use of the connection is seen.
        const checking = connection.check().catch(() => {})
        for (const until = Date.now() + 20_000; !used() && Date.now() < until;) await new Promise((resolve) => setTimeout(resolve, 20))
        expect(used()).toBe(true)
        // A local backend's probe is written under `dir`: let it finish before the folder is removed.
        if (canAppend(connection)) await checking
        await connection.close()
      } finally {
        server.close()
        await rm(parent, { recursive: true, force: true })
      }
    }, 30_000)

    it('writes a buffer and reads it back; list shows its key and size', async () => {
      const { connection } = context
      const body = Buffer.from('{"a":1}\n{"b":"é"}\n')
      await connection.put('events/t/r/2026/03/17/19/f_0001.jsonl', body, { contentType: 'application/x-ndjson' })
      expect(await collect(await connection.read('events/t/r/2026/03/17/19/f_0001.jsonl'))).toEqual(body)
      expect(await keys(connection, 'events/')).toEqual([{ key: 'events/t/r/2026/03/17/19/f_0001.jsonl', size: body.length }])
    })

    it('streams a large object without holding it whole, and reads it back intact', async () => {
      const { connection } = context
      const total = backend.largeObjectBytes ?? 12 * 1024 * 1024 + 123
      const { stream, sha256 } = generated(total)
      await connection.put('big/object.bin', stream, { contentType: 'application/octet-stream' })
      const back = createHash('sha256')
      let size = 0
      for await (const chunk of await connection.read('big/object.bin')) {
        back.update(chunk as Buffer)
        size += (chunk as Buffer).length
      }
      expect(size).toBe(total)
      expect(back.digest('hex')).toBe(sha256)
      expect(await keys(connection, 'big/')).toEqual([{ key: 'big/object.bin', size: total }])
    }, 120_000)

    it('re-writing the same key replaces the object: never a second copy', async () => {
      const { connection } = context
      await connection.put('same/key.jsonl', Buffer.from('first\n'))
      await connection.put('same/key.jsonl', Buffer.from('second, longer\n'))
      await connection.put('same/key.jsonl', Readable.from([Buffer.from('third\n')]))
      expect((await collect(await connection.read('same/key.jsonl'))).toString()).toBe('third\n')
      expect(await keys(connection, 'same/')).toEqual([{ key: 'same/key.jsonl', size: 6 }])
    })

    it('lists by prefix only what is under it', async () => {
      const { connection } = context
      for (const key of ['p/a/1', 'p/a/2', 'p/ab/3', 'p/b/4', 'q/5']) await connection.put(key, Buffer.from(key))
      expect((await keys(connection, 'p/a/')).map((k) => k.key)).toEqual(['p/a/1', 'p/a/2'])
      expect((await keys(connection, 'p/a')).map((k) => k.key)).toEqual(['p/a/1', 'p/a/2', 'p/ab/3'])
      expect((await keys(connection, 'p/')).map((k) => k.key)).toEqual(['p/a/1', 'p/a/2', 'p/ab/3', 'p/b/4'])
      expect(await keys(connection, 'nothing/here/')).toEqual([])
    })

    it('lists the folders one level below a folder, without the objects below them', async () => {
      const { connection } = context
      if (connection.listFolders === undefined) return
      for (const key of ['f/a/1', 'f/a/x/2', 'f/b/3', 'f/4', 'f/c%2F/5', 'g/6']) await connection.put(key, Buffer.from(key))
      const folders = async (folder: string): Promise<string[]> => {
        const out: string[] = []
        for await (const name of (connection.listFolders as (f: string) => AsyncIterable<string>)(folder)) out.push(name)
        return out.sort()
      }
      expect(await folders('f/')).toEqual(['a', 'b', 'c%2F'])
      expect(await folders('f/a/')).toEqual(['x'])
      expect(await folders('')).toEqual(['f', 'g'])
      expect(await folders('f/b/')).toEqual([])
      expect(await folders('nothing/')).toEqual([])
    })

    it.skipIf(backend.shallowFolderListing !== undefined)(`lists folders that hold only folders${backend.shallowFolderListing !== undefined ? ` (skipped: ${backend.shallowFolderListing})` : ''}`, async () => {
      const { connection } = context
      if (connection.listFolders === undefined) return
      for (const key of ['deep/t/r/2026/11/26/14/a.jsonl', 'deep/t/s/2026/11/26/15/b.jsonl', 'deep/u/r/2025/01/01/00/c.jsonl']) await connection.put(key, Buffer.from(key))
      const folders = async (folder: string): Promise<string[]> => {
        const out: string[] = []
        for await (const name of (connection.listFolders as (f: string) => AsyncIterable<string>)(folder)) out.push(name)
        return out.sort()
      }
      expect(await folders('deep/')).toEqual(['t', 'u'])
      expect(await folders('deep/t/')).toEqual(['r', 's'])
      expect(await folders('deep/t/r/2026/11/')).toEqual(['26'])
    })

    it('round-trips keys built from hostile topics and routing keys', async () => {
      const { connection } = context
      const hostile = ['..', '../../etc/passwd', 'a/b', 'é\u202e', '%2e%2e', ' ', '\0', 'x'.repeat(5000), '?#[]', '.hidden']
      const written = new Map<string, string>()
      for (const [i, value] of hostile.entries()) {
        const key = `h/${encodeSegment(value)}/${encodeSegment(`rk${value}`)}/f${i}.jsonl`
        written.set(key, `${i}\n`)
        await connection.put(key, Buffer.from(`${i}\n`))
      }
      const listed = await keys(connection, 'h/')
      expect(listed.map((k) => k.key).sort()).toEqual([...written.keys()].sort())
      for (const [key, body] of written) expect((await collect(await connection.read(key))).toString()).toBe(body)
    })

    it('refuses unsafe keys instead of writing outside its root', async () => {
      const { connection } = context
      for (const key of ['../escape', '/absolute', 'a//b', 'a/./b', 'a/../b', '', 'a\\b']) {
        await expect(connection.put(key, Buffer.from('x'))).rejects.toMatchObject({ code: 'EVS_ERR_CONNECTION_KEY_INVALID' })
      }
    })

    it('reading a missing key rejects with EVS_ERR_CONNECTION_NOT_FOUND', async () => {
      await expect(context.connection.read('missing/key')).rejects.toMatchObject({ code: 'EVS_ERR_CONNECTION_NOT_FOUND' })
    })

    it('deletes, and deleting a missing key succeeds', async () => {
      const { connection } = context
      await connection.put('d/x', Buffer.from('x'))
      await connection.delete('d/x')
      await connection.delete('d/x')
      await connection.delete('d/never-existed')
      expect(await keys(connection, 'd/')).toEqual([])
    })

    it('an aborted upload leaves no object, and keeps an earlier one whole', async () => {
      const { connection } = context
      await connection.put('abort/kept', Buffer.from('original\n'))
      const failing = (): Readable => Readable.from((async function * () {
        yield randomBytes(256 * 1024)
        yield randomBytes(256 * 1024)
        throw new Error('client went away')
      })())
      await expect(connection.put('abort/new', failing())).rejects.toThrow()
      await expect(connection.put('abort/kept', failing())).rejects.toThrow()
      expect((await keys(connection, 'abort/')).map((k) => k.key)).toEqual(['abort/kept'])
      expect((await collect(await connection.read('abort/kept'))).toString()).toBe('original\n')
    })

    it('check() writes and removes a probe', async () => {
      const { connection } = context
      await connection.check()
      expect(await keys(connection, '')).toEqual([])
    })

    it('close() can be called twice', async () => {
      await expect(context.connection.close()).resolves.toBeUndefined()
      await expect(context.connection.close()).resolves.toBeUndefined()
    })
  })
}
