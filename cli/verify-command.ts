import { readFileSync } from 'node:fs'
import type { VerifyProgress, VerifyReport } from '../core/destination.js'
import { EVS_ERR_CLI_ARGUMENT } from '../core/errors.js'
import { readSettingsFile, verifyTrail } from '../index.js'

function parseTime (name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const ms = Date.parse(text)
  if (Number.isNaN(ms)) throw new EVS_ERR_CLI_ARGUMENT(`--${name} expects an ISO-8601 date or time such as 2026-11-26 or 2026-11-26T08:00:00Z, got "${text}"`)
  return ms
}

/** Heads from log lines: the server logs each as `{"integrityHead":{…},"msg":"integrity head"}`. */
function knownHeads (text: string): Array<{ destination: string, instanceId: string, seq: number, hash: string }> {
  const heads = []
  for (const line of text.split('\n')) {
    const start = line.indexOf('{')
    if (start === -1) continue
    let parsed: unknown
    try {
      parsed = JSON.parse(line.slice(start))
    } catch {
      continue
    }
    const head = (parsed as { integrityHead?: unknown }).integrityHead ?? parsed
    const h = head as { destination?: unknown, instanceId?: unknown, seq?: unknown, hash?: unknown }
    if (typeof h.destination === 'string' && typeof h.instanceId === 'string' && typeof h.seq === 'number' && typeof h.hash === 'string') {
      heads.push({ destination: h.destination, instanceId: h.instanceId, seq: h.seq, hash: h.hash })
    }
  }
  return heads
}

function megabytes (bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

function reportText (report: VerifyReport): string {
  const { summary } = report
  const lines = [`destination ${report.destination}: ${report.problems.length === 0 ? 'OK' : `FAILED, ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`}`]
  for (const p of report.problems) lines.push(`  ${p.kind.padEnd(17)} ${p.key}\n  ${' '.repeat(17)} ${p.message}`)
  for (const o of report.open) lines.push(`  ${'open'.padEnd(17)} ${o.key}: ${o.message}`)
  lines.push(`  ${summary.files} files, ${megabytes(summary.bytes)}, ${summary.events} events verified` +
    `${summary.from !== null ? `, received ${summary.from} to ${summary.to ?? '?'}` : ''}; ${summary.records} records (${summary.heads} heads) from ${summary.instances} instance${summary.instances === 1 ? '' : 's'}; ` +
    (summary.signed ? 'signatures checked' : 'signatures not checked'))
  for (const note of summary.notes) lines.push(`  note: ${note}`)
  return lines.join('\n') + '\n'
}

/** `dss-event-server verify`: exit code 0 only if every destination's trail checks. */
export async function verifyCommand (values: Record<string, string | boolean | string[] | undefined>): Promise<number> {
  const config = values.config as string | undefined
  if (config === undefined) throw new EVS_ERR_CLI_ARGUMENT('verify needs --config FILE: the settings of the server whose trail to check')
  const source = await readSettingsFile(config)
  const from = parseTime('from', values.from as string | undefined)
  const to = parseTime('to', values.to as string | undefined)
  const publicKeys = ((values['public-key'] ?? []) as string[]).map((file) => readFileSync(file, 'utf8'))
  const heads = values.heads === undefined ? undefined : knownHeads(readFileSync(values.heads as string, 'utf8'))
  const json = values.json === true
  const tty = process.stderr.isTTY && !json
  let lastDraw = 0
  const draw = (destination: string, p: VerifyProgress): void => {
    const now = Date.now()
    if (now - lastDraw < 100 && p.done !== p.total) return
    lastDraw = now
    const count = p.total > 0 ? ` ${p.done}/${p.total}` : ''
    process.stderr.write(`\r\x1b[K${destination}: ${p.phase}${count}${p.bytes > 0 ? `, ${megabytes(p.bytes)}` : ''}`)
  }
  const result = await verifyTrail(source, {
    ...(values.destination !== undefined ? { destination: values.destination as string } : {}),
    ...(from !== undefined ? { from } : {}),
    ...(to !== undefined ? { to } : {}),
    ...(publicKeys.length > 0 ? { publicKeys } : {}),
    ...(heads !== undefined ? { knownHeads: heads } : {}),
    now: Date.now(),
    ...(tty ? { onProgress: draw } : {})
  })
  if (tty) process.stderr.write('\r\x1b[K')
  const ok = result.reports.length > 0 && result.reports.every((r) => r.problems.length === 0)
  if (json) {
    process.stdout.write(JSON.stringify({ ok, destinations: result.reports, skipped: result.skipped, warnings: result.warnings }, null, 2) + '\n')
  } else {
    for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`)
    for (const s of result.skipped) process.stdout.write(`destination ${s.destination}: skipped, ${s.reason}\n`)
    for (const report of result.reports) process.stdout.write(reportText(report))
    if (result.reports.length === 0) process.stdout.write('no destination with an integrity trail to verify\n')
  }
  return ok ? 0 : 1
}
