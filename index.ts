// The package entry (`dss-event-server`): the core, composed with the built-in plugin types.
// The core names no plugin; this file and the command line hand it the built-in table.
import { checkSettings as checkCoreSettings, type CheckOptions, type CheckResult } from './core/check.js'
import { queryEvents as queryCoreEvents, type EventQueryResult, type QueryEventsOptions } from './core/query.js'
import { buildServer as buildCoreServer, type BuildServerOptions } from './core/server.js'
import { builtinTypes } from './plugins/builtin.js'
import { verifyTrail as verifyCoreTrail, type VerifyTrailOptions, type VerifyTrailResult } from './core/verify-trail.js'
import type { SettingsSource } from './core/settings.js'

/** Builds the server (see core/server.ts) with the built-in types unless `builtinTypes` is given. */
export async function buildServer (options: BuildServerOptions = {}): ReturnType<typeof buildCoreServer> {
  return await buildCoreServer({ builtinTypes, ...options })
}

/** Validates settings as `buildServer` would (see core/check.ts), with the built-in types. */
export async function checkSettings (document: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env, options: CheckOptions = {}): Promise<CheckResult> {
  return await checkCoreSettings(document, baseDir, env, { builtinTypes, ...options })
}

/** Checks the integrity trail that destinations stored (see core/verify-trail.ts), with the built-in types. */
export async function verifyTrail (source: SettingsSource, options: VerifyTrailOptions): Promise<VerifyTrailResult> {
  return await verifyCoreTrail(source, { builtinTypes, ...options })
}

export { builtinTypes }
export type { VerifyTrailOptions, VerifyTrailResult } from './core/verify-trail.js'
export type { SettingsSource } from './core/settings.js'
/** The events a destination stored, read back with no server running (see core/query.ts), with the built-in types unless `builtinTypes` is given. */
export function queryEvents (options: QueryEventsOptions): EventQueryResult {
  return queryCoreEvents({ builtinTypes, ...options })
}

export type { EventQueryResult, QueryEventsOptions } from './core/query.js'
export { parseWhere, parseFieldPath, fieldValue, valueText, type FieldPath, type WhereCondition } from './core/where.js'
export type { BuildServerOptions, EventServer } from './core/server.js'
export type { CheckOptions, CheckResult, ConnectionProbe } from './core/check.js'
export { readSettingsFile, parseCoreSettings, interpolateEnv } from './core/settings.js'
export * from './core/plugin-api.js'
export * as errors from './core/errors.js'
