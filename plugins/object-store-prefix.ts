import type { SettingsProblem } from '../core/plugin-api.js'

/** `audit` and `audit/` both mean the folder `audit/`; `''` means the bucket's root. */
export function joinPrefix (prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, '')
  return trimmed === '' ? '' : `${trimmed}/`
}

export function checkPrefix (prefix: string, field = '/prefix'): SettingsProblem[] {
  const segments = prefix.replace(/^\/+|\/+$/g, '').split('/').filter((s) => s !== '')
  if (segments.some((s) => s === '.' || s === '..' || s.includes('\\') || s.includes('\0'))) {
    return [{ path: field, message: `expected a "/"-separated prefix without "." or ".." segments, got ${JSON.stringify(prefix)}` }]
  }
  return []
}
