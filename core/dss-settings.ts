import type { SettingsProblem } from './validation.js'

// Maps a DSS `eventServerSettings` block (DSS 9 field names) onto this server's settings, so that an
// admin can bring the block from their DSS install. The mapping is documented in docs/settings.md.

const TARGET_FIELDS: Readonly<Record<string, string>> = {
  topicsFiltering: 'topicsFiltering',
  topics: 'topics',
  routingKeysFiltering: 'routingKeysFiltering',
  routingKeys: 'routingKeys',
  requiredAuthKey: 'requiredAuthKey',
  fileLikeConnectionName: 'connection',
  fileLikePathWithinConnection: 'path',
  folderByTopic: 'folderByTopic',
  folderByRoutingKey: 'folderByRoutingKey',
  partitioningPeriod: 'partitioningPeriod',
  flushEveryBytes: 'flushEveryBytes',
  flushEveryS: 'flushEveryS'
}
// Fields DSS has that mean nothing here: accepted and reported.
const IGNORED_TARGET_FIELDS = new Set(['runAs', 'type', 'name', 'enabled', 'description'])
const SECURITY_FIELDS = [
  'requireAuthenticationForEvents', 'eventsAuthenticationKeys',
  'requireAuthenticationForStats', 'statsAuthenticationKeys'
]

export interface DssMapping {
  document: Record<string, unknown>
  problems: SettingsProblem[]
  warnings: string[]
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isBlank (value: unknown): boolean {
  return value === null || value === undefined || value === ''
}

function keyList (value: unknown): unknown {
  if (!Array.isArray(value)) return value
  return value.map((entry) => isRecord(entry) ? { key: entry.key } : entry)
}

function mapTarget (target: unknown, index: number, problems: SettingsProblem[], warnings: string[]): Record<string, unknown> | undefined {
  const at = `/eventServerSettings/targets/${index}`
  if (!isRecord(target)) {
    problems.push({ path: at, message: 'expected an object' })
    return undefined
  }
  if (!isBlank(target.type) && target.type !== 'FILE_LIKE_CONNECTION_PATH') {
    problems.push({ path: `${at}/type`, message: `expected "FILE_LIKE_CONNECTION_PATH" (the only DSS target type), got ${JSON.stringify(target.type)}` })
  }
  const destination: Record<string, unknown> = {
    name: typeof target.name === 'string' && target.name !== '' ? target.name : `target-${index}`,
    type: 'files'
  }
  for (const [field, value] of Object.entries(target)) {
    const mapped = TARGET_FIELDS[field]
    if (mapped !== undefined) {
      if (!isBlank(value)) destination[mapped] = value
    } else if (IGNORED_TARGET_FIELDS.has(field)) {
      if (field === 'runAs' && !isBlank(value)) {
        warnings.push(`${at}/runAs is ignored: files are written as the user running this server`)
      }
    } else {
      warnings.push(`${at}/${field} is not a known DSS target field and is ignored`)
    }
  }
  return destination
}

/** Returns the document with `eventServerSettings` folded into `security` and `destinations`. */
export function mapDssSettings (input: Record<string, unknown>): DssMapping {
  const problems: SettingsProblem[] = []
  const warnings: string[] = []
  const { eventServerSettings: dss, ...document } = input
  if (dss === undefined) return { document, problems, warnings }
  if (!isRecord(dss)) {
    problems.push({ path: '/eventServerSettings', message: 'expected an object (the eventServerSettings block of DSS)' })
    return { document, problems, warnings }
  }

  const security: Record<string, unknown> = {}
  for (const field of SECURITY_FIELDS) {
    if (!isBlank(dss[field])) security[field] = field.endsWith('Keys') ? keyList(dss[field]) : dss[field]
  }
  // Explicit top-level settings win over the imported block.
  document.security = { ...security, ...(isRecord(document.security) ? document.security : {}) }

  const targets = dss.targets ?? []
  if (!Array.isArray(targets)) {
    problems.push({ path: '/eventServerSettings/targets', message: 'expected an array of targets' })
  } else {
    const mapped = targets
      .map((target, index) => mapTarget(target, index, problems, warnings))
      .filter((d): d is Record<string, unknown> => d !== undefined)
    const own = Array.isArray(document.destinations) ? document.destinations : []
    document.destinations = [...mapped, ...own]
  }
  for (const field of Object.keys(dss)) {
    if (field !== 'targets' && !SECURITY_FIELDS.includes(field)) {
      warnings.push(`/eventServerSettings/${field} is not used by this server and is ignored`)
    }
  }
  return { document, problems, warnings }
}
