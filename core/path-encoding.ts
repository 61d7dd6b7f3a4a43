import { createHash } from 'node:crypto'
import { EVS_ERR_CONNECTION_KEY_INVALID } from './errors.js'

// Topic and routing key are untrusted: they become folder names. Encoding (never dropping) keeps the
// path inside the destination's root on every backend and keeps distinct values distinct.

const PLAIN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/
const UNRESERVED = new Uint8Array(128)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-') UNRESERVED[c.charCodeAt(0)] = 1
const HEX = '0123456789ABCDEF'

/** Longest encoded segment: well under the 255-byte name limit of common filesystems. */
export const MAX_SEGMENT_LENGTH = 200
const HASH_LENGTH = 16

/**
 * Encodes any string as one path segment made of `[A-Za-z0-9_.%~-]`: other bytes of its UTF-8 form
 * become `%XX`, a leading `.` becomes `%2E` (no `.`/`..`, no hidden folders), and a value whose
 * encoding exceeds MAX_SEGMENT_LENGTH keeps a readable prefix followed by `~` and a hash of the whole.
 */
export function encodeSegment (value: string): string {
  if (value.length <= MAX_SEGMENT_LENGTH && PLAIN.test(value)) return value
  let out = ''
  const bytes = wtf8(value)
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number
    if (b < 128 && UNRESERVED[b] === 1 && !(i === 0 && b === 0x2e)) out += String.fromCharCode(b)
    else out += '%' + HEX[b >> 4] + HEX[b & 15]
  }
  if (out === '') return '%00'
  if (out.length <= MAX_SEGMENT_LENGTH) return out
  let cut = MAX_SEGMENT_LENGTH - HASH_LENGTH - 1
  const lastPercent = out.lastIndexOf('%', cut - 1)
  if (lastPercent >= 0 && lastPercent > cut - 3) cut = lastPercent
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, HASH_LENGTH)
  return `${out.slice(0, cut)}~${hash}`
}

/**
 * The UTF-8 bytes of a string, except that a lone surrogate (valid in a JSON string, not in UTF-8)
 * gets its own three bytes (WTF-8) instead of U+FFFD's: "\ud800", "\udc00" and "\ufffd" must
 * not share one folder.
 */
function wtf8 (value: string): Buffer {
  if (!/[\ud800-\udfff]/.test(value)) return Buffer.from(value, 'utf8')
  const parts: Buffer[] = []
  let from = 0
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i)
    if (unit < 0xd800 || unit > 0xdfff) continue
    const next = value.charCodeAt(i + 1)
    if (unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++ // a valid pair
      continue
    }
    parts.push(Buffer.from(value.slice(from, i), 'utf8'), Buffer.from([0xe0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3f), 0x80 | (unit & 0x3f)]))
    from = i + 1
  }
  parts.push(Buffer.from(value.slice(from), 'utf8'))
  return Buffer.concat(parts)
}

/** True for a relative `/`-separated key with no empty, `.` or `..` segment and no NUL or backslash. */
export function isSafeKey (key: string): boolean {
  if (key === '' || key.includes('\0') || key.includes('\\')) return false
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') return false
  }
  return true
}

/** For connections: throws EVS_ERR_CONNECTION_KEY_INVALID unless `key` is safe. */
export function assertSafeKey (connection: string, key: string): void {
  if (!isSafeKey(key)) throw new EVS_ERR_CONNECTION_KEY_INVALID(connection, key.slice(0, 200))
}
