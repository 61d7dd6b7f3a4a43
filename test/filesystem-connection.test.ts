import { describe, expect, it } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FilesystemConnection } from '../plugins/filesystem/index.js'
import { describeConnection } from './conformance/describe-connection.js'
import { tempDir } from './helpers.js'

describeConnection('filesystem', {
  create: async () => new FilesystemConnection({ root: 'root' }, { name: 'fs', baseDir: await tempDir() }),
  observed: ({ dir }) => new FilesystemConnection({ root: dir }, { name: 'fs', baseDir: process.cwd() })
})

describe('filesystem connection', () => {
  it('resolves a relative root against the settings folder and keeps keys inside it', async () => {
    const dir = await tempDir()
    const connection = new FilesystemConnection({ root: './a/../b' }, { name: 'fs', baseDir: dir })
    expect(connection.root).toBe(join(dir, 'b'))
    expect(connection.localPath('x/y.jsonl')).toBe(join(dir, 'b', 'x', 'y.jsonl'))
    expect(() => connection.localPath('../x')).toThrow(/refused key/)
  })

  it('check() reports the operating system error when the root cannot be written', async () => {
    const dir = await tempDir()
    await writeFile(join(dir, 'file'), 'not a folder')
    const connection = new FilesystemConnection({ root: './file/sub' }, { name: 'fs', baseDir: dir })
    await expect(connection.check()).rejects.toMatchObject({ code: expect.stringMatching(/ENOTDIR|EEXIST/) })
  })
})

describe('filesystem connection streams', () => {
  it('rejects (and does not crash) when the body stream fails before it is read', async () => {
    const { Readable } = await import('node:stream')
    const connection = new FilesystemConnection({ root: 'root' }, { name: 'fs', baseDir: await tempDir() })
    const body = new Readable({ read () {} })
    process.nextTick(() => body.destroy(new Error('source failed early')))
    await expect(connection.put('deep/er/key', body)).rejects.toThrow('source failed early')
  })
})
