import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { checkSettings } from '../index.js'
import { checkSettings as checkCoreSettings } from '../core/check.js'
import { buildServer as buildCoreServer } from '../core/server.js'
import { start, tempDir } from './helpers.js'
import { captured } from './fixtures/dss-event-server-plugin-capture/index.js'

const FIXTURE = join(import.meta.dirname, 'fixtures', 'dss-event-server-plugin-capture')

describe('third-party destination plugins', () => {
  it('loads a plugin package named in settings and routes events to its destination type', async () => {
    const dir = await tempDir()
    const file = join(dir, 'captured.jsonl')
    const app = await start({
      baseDir: dir,
      document: {
        plugins: ['dss-event-server-plugin-capture'],
        destinations: [{ name: 'audit-copy', type: 'capture', file, topicsFiltering: 'SELECTED', topics: ['generic'] }]
      }
    })
    // Only what settings use is loaded: no filesystem connection, no files destination.
    expect([...app.eventServerTypes.connectionTypes.keys()]).toEqual([])
    expect([...app.eventServerTypes.destinationTypes.keys()]).toEqual(['capture'])
    await app.inject({ method: 'POST', url: '/events/generic/rk', payload: [{ a: 1 }, { a: 2, topic: 'authfail' }] })
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((l) => l.clientEvent)).toEqual([{ a: 1 }])
    expect(app.eventServer.destinations.get('audit-copy')?.stats?.()).toEqual({ events: 1 })
  })

  it('loads a plugin by path, relative to the settings folder, next to the built-in types', async () => {
    const dir = await tempDir()
    const app = await start({
      baseDir: join(FIXTURE, '..'),
      document: {
        plugins: ['./dss-event-server-plugin-capture'],
        connections: { local: { type: 'filesystem', root: dir } },
        destinations: [
          { name: 'files', connection: 'local' },
          { name: 'mem', type: 'capture', label: 'x' }
        ]
      }
    })
    await app.inject({ method: 'POST', url: '/events/t/r', payload: { a: 1 } })
    const mem = captured.get('mem') as { events: Array<{ topic: string, routingKey: string, line: string }>, options: unknown }
    expect(mem.options).toEqual({ label: 'x' })
    expect(mem.events).toHaveLength(1)
    expect(mem.events[0]).toMatchObject({ topic: 't', routingKey: 'r' })
    expect(JSON.parse(mem.events[0]?.line ?? '').clientEvent).toEqual({ a: 1 })
    await app.close()
    expect((captured.get('mem') as { closed: boolean }).closed).toBe(true)
  })

  it('validates plugin options against the schema the plugin registered', async () => {
    const dir = await tempDir()
    const { problems } = await checkSettings({
      plugins: [FIXTURE],
      destinations: [{ name: 'mem', type: 'capture', lable: 'typo' }]
    }, dir)
    expect(problems).toEqual([{ path: '/destinations/0/lable', message: 'unexpected property, got "typo"' }])
  })

  it('answers 503 when a destination fails, naming it, and never 2xx', async () => {
    const dir = await tempDir()
    const app = await start({ baseDir: dir, document: { plugins: [FIXTURE], destinations: [{ name: 'broken', type: 'capture', failWith: 'backend down' }] } })
    const res = await app.inject({ method: 'POST', url: '/events/t/r', payload: { a: 1 } })
    expect(res.statusCode).toBe(503)
    expect(res.json()).toMatchObject({ code: 'EVS_ERR_DESTINATION_UNAVAILABLE', error: expect.stringContaining('"broken"') })
    expect(res.headers['retry-after']).toBe('5')
  })

  it('explains a plugin that cannot be found or is not a plugin', async () => {
    const dir = await tempDir()
    await expect(checkSettings({ plugins: ['dss-event-server-plugin-does-not-exist'] }, dir))
      .rejects.toMatchObject({ code: 'EVS_ERR_PLUGIN_LOAD', message: expect.stringContaining('"dss-event-server-plugin-does-not-exist": not found') })
    const { writeFile } = await import('node:fs/promises')
    await writeFile(join(dir, 'not-a-plugin.mjs'), 'export default 42\n')
    await expect(checkSettings({ plugins: ['./not-a-plugin.mjs'] }, dir))
      .rejects.toMatchObject({ code: 'EVS_ERR_PLUGIN_LOAD', message: expect.stringContaining('not a Fastify plugin') })
  })

  it('refuses two plugins registering the same type name', async () => {
    const dir = await tempDir()
    const { writeFile } = await import('node:fs/promises')
    await writeFile(join(dir, 'impostor.mjs'), `export default async function impostor (fastify) {
  fastify.eventServerTypes.registerDestinationType({ type: 'capture', schema: {}, create () { throw new Error('never') } })
}
`)
    const document = { plugins: [FIXTURE, './impostor.mjs'], destinations: [{ name: 'mem', type: 'capture' }] }
    await expect(checkSettings(document, dir)).rejects.toMatchObject({ code: 'EVS_ERR_PLUGIN_TYPE_DUPLICATE', message: 'A destination type named "capture" is already registered' })
  })

  it('the core alone names no type: built-in types come from the table the entry point hands it', async () => {
    const dir = await tempDir()
    const { problems } = await checkCoreSettings({}, dir)
    expect(problems).toEqual([
      { path: '/connections/default/type', message: 'expected a connection type added by a plugin listed in "plugins", got "filesystem"' },
      { path: '/destinations/0/type', message: 'expected a destination type added by a plugin listed in "plugins", got "files"' }
    ])
    const app = await buildCoreServer({
      document: { plugins: [FIXTURE], destinations: [{ name: 'mem', type: 'capture' }] },
      baseDir: dir,
      logger: false
    })
    await app.close()
  })

  it('names the packages to install when a built-in type cannot load its SDK', async () => {
    const dir = await tempDir()
    const missing = Object.assign(new Error("Cannot find package '@example/sdk' imported from x.js"), { code: 'ERR_MODULE_NOT_FOUND' })
    const builtinTypes = [{ type: 'example', kind: 'connection' as const, load: async () => { throw missing }, packages: ['@example/sdk', '@example/auth'] }]
    await expect(checkCoreSettings({ connections: { c: { type: 'example' } } }, dir, {}, { builtinTypes })).rejects.toMatchObject({
      code: 'EVS_ERR_PLUGIN_LOAD',
      message: 'Cannot load plugin "example": Cannot find package \'@example/sdk\' imported from x.js; connections of type "example" need: npm install @example/sdk @example/auth'
    })
  })
})
