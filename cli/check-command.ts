import { formatProblems } from '../core/validation.js'
import { checkSettings, readSettingsFile, type SettingsSource } from '../index.js'

async function loadSource (config: string | undefined): Promise<SettingsSource> {
  if (config === undefined) return { document: {}, baseDir: process.cwd(), origin: 'built-in defaults' }
  return await readSettingsFile(config)
}

/** `dss-event-server check`: exit code 1 if the settings have a problem or a probed connection failed. */
export async function checkCommand (config: string | undefined, probeConnections: boolean): Promise<number> {
  const source = await loadSource(config)
  const { problems, warnings, probes } = await checkSettings(source.document, source.baseDir, process.env, { probeConnections })
  for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`)
  if (problems.length > 0) {
    process.stderr.write(`${source.origin}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${formatProblems(problems)}\n`)
    return 1
  }
  process.stdout.write(`${source.origin}: settings are valid\n`)
  if (probes === undefined) return 0
  for (const p of probes) {
    process.stdout.write(p.ok
      ? `connection ${p.name} (${p.type}): ok, a probe object was written and deleted\n`
      : `connection ${p.name} (${p.type}): FAILED: ${p.error ?? 'unknown error'}\n`)
  }
  return probes.every((p) => p.ok) ? 0 : 1
}
