import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import pino from 'pino'
import { captureLogs, fsSettings, listFiles, readEvents, start, tempDir } from './helpers.js'
import { KeyRing, presentedKey } from '../core/auth.js'

const KEY_A = 'key-A-7f3a9c1e5d'
const KEY_B = 'key-B-2b8e4f6a0c'

function basic (password: string, user = 'dss'): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

async function secured (extraDestinations: Array<Record<string, unknown>> = []) {
  const dir = await tempDir()
  const { stream, logs } = captureLogs()
  const document = {
    ...fsSettings(),
    security: {
      requireAuthenticationForEvents: true,
      eventsAuthenticationKeys: [{ key: KEY_A }, { key: '${EVS_TEST_KEY_B}' }],
      authKeyHeader: 'X-My-Key'
    },
    destinations: [{ name: 'all', connection: 'local', path: 'all' }, ...extraDestinations]
  }
  const app = await start({ document, baseDir: dir, env: { EVS_TEST_KEY_B: KEY_B }, loggerInstance: pino({ level: 'trace' }, stream) })
  return { app, out: join(dir, 'out'), logs }
}

describe('authentication', () => {
  it('refuses events without a key (401) when authentication is required, writing nothing', async () => {
    const { app, out } = await secured()
    const res = await app.inject({ method: 'POST', url: '/events', payload: { a: 1 } })
    expect(res.statusCode).toBe(401)
    expect(res.json().code).toBe('EVS_ERR_AUTH_REQUIRED')
    expect(await listFiles(out)).toEqual([])
  })

  it('refuses a wrong key (401)', async () => {
    const { app } = await secured()
    const res = await app.inject({ method: 'POST', url: '/events', headers: { authorization: 'Bearer nope' }, payload: { a: 1 } })
    expect(res.statusCode).toBe(401)
    expect(res.json().code).toBe('EVS_ERR_AUTH_INVALID')
  })

  it.each([
    ['Bearer', { authorization: `Bearer ${KEY_A}` }],
    ['Basic auth password', { authorization: basic(KEY_A) }],
    ['the configured header', { 'x-my-key': KEY_A }],
    ['a key from ${ENV}', { authorization: `Bearer ${KEY_B}` }],
    ['the Basic user name with an empty password (DSS API-key convention)', { authorization: basic('', KEY_A) }]
  ])('accepts the key as %s', async (_name, headers) => {
    const { app, out } = await secured()
    const res = await app.inject({ method: 'POST', url: '/events/t/r', headers, payload: { a: 1 } })
    expect(res.statusCode).toBe(200)
    expect(await readEvents(out)).toHaveLength(1)
  })

  it('routes to a destination with requiredAuthKey only events sent with that key', async () => {
    const { app, out } = await secured([{ name: 'only-b', connection: 'local', path: 'only-b', requiredAuthKey: KEY_B }])
    await app.inject({ method: 'POST', url: '/events/t/r', headers: { authorization: `Bearer ${KEY_A}` }, payload: { sent: 'A' } })
    await app.inject({ method: 'POST', url: '/events/t/r', headers: { authorization: `Bearer ${KEY_B}` }, payload: { sent: 'B' } })
    const events = await readEvents(out)
    const where = events.map((e) => `${e.file.split('/')[0]}:${e.record.clientEvent.sent}`).sort()
    expect(where).toEqual(['all:A', 'all:B', 'only-b:B'])
  })

  it('never writes a key to the log, even for refused requests', async () => {
    const { app, logs } = await secured()
    await app.inject({ method: 'POST', url: '/events', headers: { authorization: `Bearer ${KEY_A}x` }, payload: { a: 1 } })
    await app.inject({ method: 'POST', url: '/events', headers: { authorization: `Bearer ${KEY_B}` }, payload: '{bad' })
    await app.inject({ method: 'POST', url: '/events', headers: { 'x-my-key': KEY_A }, payload: { a: 1 } })
    expect(logs.lines.length).toBeGreaterThan(0)
    expect(logs.text()).not.toContain(KEY_A)
    expect(logs.text()).not.toContain(KEY_B)
  })

  it('refuses credentials it cannot read (not base64, another scheme) rather than ignoring them', async () => {
    const { app } = await secured()
    const loose = `Basic ${Buffer.from(`dss:${KEY_A}`).toString('base64')}!!`
    for (const authorization of [loose, `Token ${KEY_A}`, `Basic ${Buffer.from(KEY_A).toString('base64')}`, 'Bearer: x']) {
      const res = await app.inject({ method: 'POST', url: '/events', headers: { authorization }, payload: { a: 1 } })
      expect(res.statusCode).toBe(401)
      expect(res.json().code).toBe('EVS_ERR_AUTH_INVALID')
    }
  })

  it('refuses settings keys with leading or trailing white space, without showing them', async () => {
    const { checkSettings } = await import('../index.js')
    const result = await checkSettings({ ...fsSettings(), security: { eventsAuthenticationKeys: [{ key: 'secret-with-space ' }] } }, await tempDir())
    expect(result.problems).toEqual([{ path: '/security/eventsAuthenticationKeys/0/key', message: expect.stringContaining('white space') }])
    expect(JSON.stringify(result.problems)).not.toContain('secret-with-space')
  })

  it('refuses a wrong key even when authentication is optional, since a keyed destination would silently miss the events', async () => {
    const dir = await tempDir()
    const app = await start({ document: { ...fsSettings(), security: { eventsAuthenticationKeys: [{ key: KEY_A }] } }, baseDir: dir })
    expect((await app.inject({ method: 'POST', url: '/events', payload: { a: 1 } })).statusCode).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/events', headers: { authorization: 'Bearer wrong' }, payload: { a: 1 } })).statusCode).toBe(401)
  })
})

describe('KeyRing and presentedKey', () => {
  it('matches every key, including keys of different lengths, and nothing else', () => {
    const ring = new KeyRing(['a', 'bb', 'a-much-longer-key'])
    expect(ring.match('a')).toBe(0)
    expect(ring.match('bb')).toBe(1)
    expect(ring.match('a-much-longer-key')).toBe(2)
    expect(ring.match('b')).toBe(-1)
    expect(ring.match('')).toBe(-1)
  })

  it('reads Bearer, Basic (password part, with colons) and a custom header', () => {
    expect(presentedKey({ authorization: 'bearer  k1 ' }, 'x-k')).toBe('k1')
    expect(presentedKey({ authorization: basic('p:with:colons') }, 'x-k')).toBe('p:with:colons')
    expect(presentedKey({ 'x-k': 'k3' }, 'x-k')).toBe('k3')
    expect(presentedKey({ authorization: basic('', 'api-key') }, 'x-k')).toBe('api-key')
    expect(presentedKey({ authorization: basic('') }, 'x-k')).toBe('dss')
    expect(presentedKey({ authorization: basic('', '') }, 'x-k')).toBeUndefined()
    expect(presentedKey({ authorization: 'Basic %%%' }, 'x-k')).toBe('')
    expect(presentedKey({ authorization: 'Bearer\tk2' }, 'x-k')).toBe('k2')
    expect(presentedKey({ authorization: 'Bearer ' }, 'x-k')).toBeUndefined()
    expect(presentedKey({ authorization: basic('', '') }, 'x-k')).toBeUndefined()
    expect(presentedKey({ authorization: 'Digest abc' }, 'x-k')).toBe('')
    expect(presentedKey({ authorization: 'Token abc' }, 'x-k')).toBe('')
    expect(presentedKey({}, 'x-k')).toBeUndefined()
  })
})
