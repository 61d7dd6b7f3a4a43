import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

const digest = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest()

/**
 * A set of secret keys. Comparison hashes the candidate and compares it to every key's hash in
 * constant time, whatever matches, so timing reveals neither a key nor which one matched.
 */
export class KeyRing {
  readonly #digests: Buffer[]

  constructor (keys: readonly string[]) {
    this.#digests = keys.map(digest)
  }

  get size (): number {
    return this.#digests.length
  }

  /** Index of the matching key, or -1. */
  match (candidate: string): number {
    const d = digest(candidate)
    let found = -1
    for (let i = 0; i < this.#digests.length; i++) {
      if (timingSafeEqual(d, this.#digests[i] as Buffer) && found === -1) found = i
    }
    return found
  }
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/

/** Stands for credentials that cannot be decoded: a key that matches no configured key (keys are never empty). */
export const MALFORMED_KEY = ''

/**
 * The key a request presents: the value of the configured header, `Authorization: Bearer <key>`,
 * or Basic auth (`user:password`): the password, or the user name when the password is empty
 * (DSS's own convention for API keys). Undefined when none is sent (or an empty one); MALFORMED_KEY
 * for credentials that cannot be read (another scheme, Basic that is not valid base64), so they are
 * refused rather than read loosely.
 */
export function presentedKey (headers: IncomingHttpHeaders, keyHeader: string): string | undefined {
  const custom = headers[keyHeader]
  if (typeof custom === 'string' && custom !== '') return custom
  const authorization = headers.authorization
  if (authorization === undefined) return undefined
  const match = /^([A-Za-z][A-Za-z0-9._~+/-]*)(?:[ \t]+(.*))?$/s.exec(authorization.trim())
  // Credentials in a form we do not know are refused rather than ignored: with authentication
  // optional, ignoring them would silently skip the destinations that require a key.
  if (match === null) return MALFORMED_KEY
  const scheme = (match[1] as string).toLowerCase()
  const value = (match[2] ?? '').trim()
  // An empty value is no key at all: a node configured with a blank key may still send the header.
  if (value === '') return scheme === 'bearer' || scheme === 'basic' ? undefined : MALFORMED_KEY
  if (scheme === 'bearer') return value
  if (scheme === 'basic') {
    if (!BASE64.test(value)) return MALFORMED_KEY
    const decoded = Buffer.from(value, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon === -1) return MALFORMED_KEY
    const user = decoded.slice(0, colon)
    const password = decoded.slice(colon + 1)
    if (password !== '') return password
    return user === '' ? undefined : user
  }
  return MALFORMED_KEY
}
