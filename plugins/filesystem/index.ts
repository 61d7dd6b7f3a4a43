import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import {
  EVS_ERR_CONNECTION_KEY_INVALID, EVS_ERR_CONNECTION_NOT_FOUND, isSafeKey, Type, writeAndDeleteProbe,
  type AppendableConnection, type ConnectionContext, type ObjectInfo, type PutOptions, type Static
} from '../../core/plugin-api.js'
import { fsyncDir } from '../fs-sync.js'

export const FilesystemOptionsSchema = Type.Object({
  root: Type.String({ minLength: 1, description: 'folder holding every key; relative paths resolve against the settings file folder' })
}, { additionalProperties: false })

export type FilesystemOptions = Static<typeof FilesystemOptionsSchema>

const TEMP_SUFFIX = '.evs-tmp'

export class FilesystemConnection implements AppendableConnection {
  readonly type = 'filesystem'
  readonly name: string
  readonly root: string
  readonly capabilities = { append: true } as const

  constructor (options: FilesystemOptions, context: Pick<ConnectionContext, 'name' | 'baseDir'>) {
    this.name = context.name
    this.root = resolve(context.baseDir, options.root)
  }

  localPath (key: string): string {
    if (!isSafeKey(key)) throw new EVS_ERR_CONNECTION_KEY_INVALID(this.name, key.slice(0, 200))
    const path = join(this.root, ...key.split('/'))
    // Defence in depth: a safe key cannot leave the root, and this proves it on every call.
    if (!path.startsWith(this.root + sep)) throw new EVS_ERR_CONNECTION_KEY_INVALID(this.name, key.slice(0, 200))
    return path
  }

  async put (key: string, body: Readable | Buffer, _options?: PutOptions): Promise<void> {
    // The body may fail while the folder is being made: keep that error for the pipeline below
    // (it reads the stream's error state) instead of letting it escape as an uncaught exception.
    if (!Buffer.isBuffer(body)) body.on('error', () => {})
    const target = this.localPath(key)
    const folder = dirname(target)
    await mkdir(folder, { recursive: true })
    // A hidden temporary name, renamed into place once complete: readers never see a partial object.
    const temp = join(folder, `.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`)
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, createWriteStream(temp, { flags: 'wx' }))
      const handle = await open(temp, 'r+')
      try {
        await handle.datasync()
      } finally {
        await handle.close()
      }
      await rename(temp, target)
      await fsyncDir(folder)
    } catch (err) {
      await rm(temp, { force: true })
      throw err
    }
  }

  async read (key: string): Promise<Readable> {
    const path = this.localPath(key)
    try {
      const handle = await open(path, 'r')
      return handle.createReadStream()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EISDIR') {
        throw new EVS_ERR_CONNECTION_NOT_FOUND(this.name, key)
      }
      throw err
    }
  }

  async * list (prefix: string): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf('/')
    const folderKey = slash === -1 ? '' : prefix.slice(0, slash)
    if (folderKey !== '' && !isSafeKey(folderKey)) throw new EVS_ERR_CONNECTION_KEY_INVALID(this.name, prefix.slice(0, 200))
    const folder = folderKey === '' ? this.root : join(this.root, ...folderKey.split('/'))
    let entries
    try {
      entries = await readdir(folder, { recursive: true, withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return
      throw err
    }
    for (const entry of entries) {
      if (!entry.isFile() || entry.name.endsWith(TEMP_SUFFIX)) continue
      const path = join(entry.parentPath, entry.name)
      const key = relative(this.root, path).split(sep).join('/')
      if (!key.startsWith(prefix)) continue
      const info = await stat(path).catch(() => undefined)
      if (info !== undefined) yield { key, size: info.size }
    }
  }

  async * listFolders (folder: string): AsyncIterable<string> {
    const folderKey = folder.replace(/\/$/, '')
    if (folderKey !== '' && !isSafeKey(folderKey)) throw new EVS_ERR_CONNECTION_KEY_INVALID(this.name, folder.slice(0, 200))
    let entries
    try {
      entries = await readdir(folderKey === '' ? this.root : this.localPath(folderKey), { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return
      throw err
    }
    for (const entry of entries) if (entry.isDirectory()) yield entry.name
  }

  async delete (key: string): Promise<void> {
    try {
      await unlink(this.localPath(key))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }

  async check (): Promise<void> {
    await mkdir(this.root, { recursive: true })
    await writeAndDeleteProbe(this)
  }

  async close (): Promise<void> {}
}

async function filesystemConnection (fastify: FastifyInstance): Promise<void> {
  fastify.eventServerTypes.registerConnectionType({
    type: 'filesystem',
    schema: FilesystemOptionsSchema,
    create: (options: FilesystemOptions, context) => new FilesystemConnection(options, context)
  })
}

export default fp(filesystemConnection, {
  fastify: '5.x',
  name: 'dss-event-server-filesystem',
  dependencies: ['dss-event-server-types']
})
