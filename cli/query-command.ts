import { newQueryStats, type QueryProblem, type QueryStats } from '../core/destination.js'
import { queryEvents, type QueryEventsOptions } from '../index.js'
import { parseDuration } from './parse-duration.js'
import { EventWriter, GroupCounter, OUTPUT_FORMATS, parseFields, type OutputFormat, type Sink } from './query-output.js'

export const QUERY_USAGE = `  query    Read back the events a destination stored, with no server running:
           query [--config FILE] [--destination NAME] [--from TIME] [--to TIME]
                 [--topic T]... [--routing-key R]... [--user U]... [--msg-type M]...
                 [--address A]... [--where EXPR]... [--format ndjson|table|csv]
                 [--fields a,b] [--limit N] [--order time] [--count-by a,b]
                 [--follow [--interval 10s]]
           TIME: 2026-11-25, 2026-11-25T14:00 (server.timeZone unless it has an
           offset), now, today, yesterday, now-2h, now-7d. EXPR: path=value, path!=value,
           path~text, path~/regex/i. Exit code 0, 1 if files could not be read
           (reported on stderr), 2 on bad options or settings, 130 on Ctrl-C
`

export type QueryArgs = Record<string, string | boolean | string[] | undefined>

const list = (value: string | boolean | string[] | undefined): string[] | undefined =>
  value === undefined ? undefined : Array.isArray(value) ? value : [String(value)]

const last = (value: string | boolean | string[] | undefined): string | undefined =>
  Array.isArray(value) ? value[value.length - 1] : typeof value === 'string' ? value : undefined

function bytes (n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)} MB` : `${(n / 1024 ** 3).toFixed(2)} GB`
}

function progress (stats: QueryStats, elapsedS: number): string {
  return `${stats.filesOpened} of ${stats.filesListed} files, ${bytes(stats.bytesScanned)} scanned, ${stats.eventsMatched} events matched (${(stats.bytesScanned / 1024 ** 2 / Math.max(elapsedS, 0.001)).toFixed(0)} MB/s)`
}

interface QueryCommandContext {
  stdout?: NodeJS.WriteStream
  stderr?: NodeJS.WriteStream
}

/** stdout with back-pressure, written in large pieces; stops quietly when the reader went away (`| head`). */
function stdoutSink (stdout: NodeJS.WriteStream, onClosed: () => void): { sink: Sink, flush: () => Promise<void> } {
  let pending: string[] = []
  let size = 0
  let closed = false
  let timer: NodeJS.Timeout | undefined
  stdout.on('error', (err: NodeJS.ErrnoException) => {
    closed = true
    if (err.code === 'EPIPE') onClosed()
  })
  const flush = async (): Promise<void> => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (pending.length === 0 || closed) return
    const text = pending.join('')
    pending = []
    size = 0
    if (!stdout.write(text)) await new Promise<void>((resolve) => { stdout.once('drain', resolve); stdout.once('error', () => resolve()) })
  }
  const sink: Sink = async (text) => {
    if (closed) return
    pending.push(text)
    size += text.length
    if (size >= 64 * 1024) await flush()
    // Rows that trickle in (--follow, a slow store) are shown within 100 ms.
    else timer ??= setTimeout(() => { void flush() }, 100)
  }
  return { sink, flush }
}

/** `dss-event-server query`: resolves with the exit code. */
export async function queryCommand (values: QueryArgs, { stdout = process.stdout, stderr = process.stderr }: QueryCommandContext = {}): Promise<number> {
  const fail = (message: string): number => {
    stderr.write(`${message}\n`)
    return 2
  }
  const controller = new AbortController()
  let interrupted = false
  let pipeClosed = false
  const onSigint = (): void => {
    if (interrupted) process.exit(130)
    interrupted = true
    controller.abort()
  }
  process.on('SIGINT', onSigint)
  process.on('SIGTERM', onSigint)
  const tty = stderr.isTTY === true
  let progressTimer: NodeJS.Timeout | undefined
  let progressShown = false
  const clearProgress = (): void => {
    if (progressShown) stderr.write('\r\x1b[K')
    progressShown = false
  }
  try {
    const format = (last(values.format) ?? (stdout.isTTY === true ? 'table' : 'ndjson')) as OutputFormat
    if (!OUTPUT_FORMATS.includes(format)) return fail(`--format expects one of ${OUTPUT_FORMATS.join(', ')}, got "${String(last(values.format))}"`)
    const order = last(values.order)
    if (order !== undefined && order !== 'time' && order !== 'stored') return fail(`--order expects "time" (or "stored", the default), got "${order}"`)
    const limitText = last(values.limit)
    const limit = limitText === undefined ? undefined : Number(limitText)
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) return fail(`--limit expects a whole number, got "${limitText}"`)
    const intervalText = last(values.interval)
    const intervalS = intervalText === undefined ? undefined : parseDuration(intervalText)
    if (intervalText !== undefined && (intervalS === undefined || intervalS <= 0)) return fail(`--interval expects e.g. 10s, 1m or 500ms, got "${intervalText}"`)
    const fieldsText = last(values.fields)
    const countByText = last(values['count-by'])
    let fields, countBy
    try {
      fields = fieldsText === undefined ? undefined : parseFields(fieldsText)
      countBy = countByText === undefined ? undefined : parseFields(countByText, '--count-by')
    } catch (err) {
      return fail(`${(err as Error & { code: string }).code}: ${(err as Error).message}`)
    }
    const follow = values.follow === true
    if (follow && countBy !== undefined) return fail('--count-by cannot be used with --follow: counts are printed at the end')

    const stats = newQueryStats()
    const problems: QueryProblem[] = []
    const config = last(values.config)
    const options: QueryEventsOptions = {
      ...(config !== undefined ? { settingsFile: config } : { document: {}, baseDir: process.cwd() }),
      ...(last(values.destination) !== undefined ? { destination: last(values.destination) as string } : {}),
      ...(last(values.from) !== undefined ? { from: last(values.from) as string } : {}),
      ...(last(values.to) !== undefined ? { to: last(values.to) as string } : {}),
      ...(list(values.topic) !== undefined ? { topics: list(values.topic) as string[] } : {}),
      ...(list(values['routing-key']) !== undefined ? { routingKeys: list(values['routing-key']) as string[] } : {}),
      ...(list(values.user) !== undefined ? { users: list(values.user) as string[] } : {}),
      ...(list(values['msg-type']) !== undefined ? { msgTypes: list(values['msg-type']) as string[] } : {}),
      ...(list(values.address) !== undefined ? { addresses: list(values.address) as string[] } : {}),
      ...(list(values.where) !== undefined ? { where: list(values.where) as string[] } : {}),
      ...(limit !== undefined && countBy === undefined ? { limit } : {}),
      ...(order === 'time' ? { order: 'time' as const } : {}),
      ...(follow ? { follow: intervalS !== undefined ? { intervalMs: intervalS * 1000 } : true } : {}),
      signal: controller.signal,
      stats,
      onProblem: (problem) => {
        problems.push(problem)
        clearProgress()
        stderr.write(`warning: ${problem.source}: ${problem.message}\n`)
      }
    }

    const { sink, flush } = stdoutSink(stdout, () => {
      pipeClosed = true
      controller.abort()
    })
    const width = stdout.isTTY === true ? stdout.columns : undefined
    const started = Date.now()
    if (tty) {
      progressTimer = setInterval(() => {
        stderr.write(`\r\x1b[K${progress(stats, (Date.now() - started) / 1000)}`)
        progressShown = true
      }, 250)
      progressTimer.unref()
    }
    const counter = countBy === undefined ? undefined : new GroupCounter(countBy)
    const writer = counter === undefined ? new EventWriter(sink, format, fields, width) : undefined
    try {
      for await (const event of queryEvents(options)) {
        if (counter !== undefined) counter.add(event)
        else await (writer as EventWriter).write(event)
      }
      if (counter !== undefined && !interrupted && !pipeClosed) await counter.write(sink, format, limit, width)
      await writer?.end()
      await flush()
    } catch (err) {
      const e = err as Error & { code?: string }
      clearProgress()
      await flush().catch(() => {})
      if (typeof e.code === 'string' && (e.code.startsWith('EVS_ERR_QUERY_') || e.code.startsWith('EVS_ERR_SETTINGS_') || e.code.startsWith('EVS_ERR_PLUGIN_'))) {
        return fail(`${e.code}: ${e.message}`)
      }
      throw err
    }
    if (progressTimer !== undefined) clearInterval(progressTimer)
    clearProgress()
    const unreadable = stats.filesUnreadable + stats.linesCorrupt
    if (tty || unreadable > 0) {
      const parts = [`${stats.eventsMatched} events from ${stats.filesOpened} files (${bytes(stats.bytesScanned)} scanned) in ${((Date.now() - started) / 1000).toFixed(1)} s`]
      if (stats.filesUnreadable > 0) parts.push(`${stats.filesUnreadable} file${stats.filesUnreadable === 1 ? '' : 's'} could not be read`)
      if (stats.linesCorrupt > 0) parts.push(`${stats.linesCorrupt} corrupt line${stats.linesCorrupt === 1 ? '' : 's'} skipped`)
      if (stats.filesPartial > 0) parts.push(`${stats.filesPartial} file${stats.filesPartial === 1 ? '' : 's'} still being written (read up to the last complete line)`)
      if (interrupted) parts.push('interrupted')
      stderr.write(`${parts.join('; ')}\n`)
    }
    if (interrupted) return 130
    if (pipeClosed) return 0
    return unreadable > 0 ? 1 : 0
  } finally {
    if (progressTimer !== undefined) clearInterval(progressTimer)
    process.off('SIGINT', onSigint)
    process.off('SIGTERM', onSigint)
  }
}
