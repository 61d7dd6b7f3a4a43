import { encodeSegment, type SettingsProblem, type TimeParts } from '../../core/plugin-api.js'

export type PartitioningPeriod = 'MONTH' | 'DAY' | 'HOUR'

export interface LayoutOptions {
  path: string
  folderByTopic: boolean
  folderByRoutingKey: boolean
  partitioningPeriod: PartitioningPeriod
  pathFormat?: string | undefined
}

/** Where an event goes: a folder under the connection, and the time period that folder belongs to. */
export interface Layout {
  /** Folder key (relative to the connection, no trailing `/`) for an event. */
  folder(topic: string, routingKey: string, time: TimeParts): string
  /** Identifies the time partition; a file never spans two. Empty when the layout has no time token. */
  period(time: TimeParts): string
}

const PERIOD_TOKENS: Record<PartitioningPeriod, string> = {
  MONTH: '%Y/%M',
  DAY: '%Y/%M/%D',
  HOUR: '%Y/%M/%D/%H'
}

export const TOKEN = /%\{topic\}|%\{routingKey\}|%Y|%M|%D|%H|%/g

export function defaultTemplate (options: Omit<LayoutOptions, 'path' | 'pathFormat'>): string {
  return [
    options.folderByTopic ? '%{topic}' : undefined,
    options.folderByRoutingKey ? '%{routingKey}' : undefined,
    PERIOD_TOKENS[options.partitioningPeriod]
  ].filter((s) => s !== undefined).join('/')
}

/** The folder template the layout follows below `path`: `pathFormat`, or the one the other options give. */
export function layoutTemplate (options: LayoutOptions): string {
  return options.pathFormat ?? defaultTemplate(options)
}

function splitPath (path: string): string[] {
  return path.split('/').filter((s) => s !== '')
}

type Piece = string | ((topic: string, routingKey: string, time: TimeParts) => string)

/**
 * Checks a `path` and a `pathFormat`: literal parts are trusted settings but still may not climb
 * out of the connection. Tokens: %{topic} %{routingKey} %Y %M %D %H.
 */
export function checkLayout (options: LayoutOptions): SettingsProblem[] {
  const problems: SettingsProblem[] = []
  for (const segment of splitPath(options.path)) {
    if (segment === '.' || segment === '..' || segment.includes('\\') || segment.includes('\0')) {
      problems.push({ path: '/path', message: `expected a relative folder without "." or ".." segments, got ${JSON.stringify(options.path)}` })
      break
    }
  }
  if (options.pathFormat !== undefined) {
    for (const segment of options.pathFormat.split('/')) {
      if (segment === '' || segment === '.' || segment === '..' || segment.includes('\\') || segment.includes('\0')) {
        problems.push({ path: '/pathFormat', message: `expected "/"-separated non-empty segments other than "." and "..", got ${JSON.stringify(options.pathFormat)}` })
        break
      }
      for (const match of segment.matchAll(TOKEN)) {
        if (match[0] === '%') {
          problems.push({ path: '/pathFormat', message: `unknown token at "${segment.slice(match.index, match.index + 12)}": expected %{topic}, %{routingKey}, %Y, %M, %D or %H` })
          return problems
        }
      }
    }
  }
  return problems
}

export function compileLayout (options: LayoutOptions): Layout {
  const template = layoutTemplate(options)
  const prefix = splitPath(options.path).join('/')
  const segments: Piece[][] = template.split('/').map((segment) => {
    const pieces: Piece[] = []
    let last = 0
    for (const match of segment.matchAll(TOKEN)) {
      if (match.index > last) pieces.push(segment.slice(last, match.index))
      last = match.index + match[0].length
      switch (match[0]) {
        case '%{topic}': pieces.push((topic) => encodeSegment(topic)); break
        case '%{routingKey}': pieces.push((_t, routingKey) => encodeSegment(routingKey)); break
        case '%Y': pieces.push((_t, _r, time) => time.year); break
        case '%M': pieces.push((_t, _r, time) => time.month); break
        case '%D': pieces.push((_t, _r, time) => time.day); break
        case '%H': pieces.push((_t, _r, time) => time.hour); break
      }
    }
    if (last < segment.length) pieces.push(segment.slice(last))
    return pieces
  })
  const tokens = new Set(template.match(TOKEN) ?? [])
  const period: (time: TimeParts) => string =
    tokens.has('%H')
      ? (t) => `${t.year}${t.month}${t.day}${t.hour}`
      : tokens.has('%D')
        ? (t) => `${t.year}${t.month}${t.day}`
        : tokens.has('%M')
          ? (t) => `${t.year}${t.month}`
          : tokens.has('%Y')
            ? (t) => t.year
            : () => ''

  return {
    period,
    folder (topic, routingKey, time) {
      let out = prefix
      for (const pieces of segments) {
        let segment = ''
        for (const piece of pieces) segment += typeof piece === 'string' ? piece : piece(topic, routingKey, time)
        out = out === '' ? segment : `${out}/${segment}`
      }
      return out
    }
  }
}
