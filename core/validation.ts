import { Value } from '@sinclair/typebox/value'
import { type Static, type TSchema } from '@sinclair/typebox'

export interface SettingsProblem {
  /** JSON-pointer-like path in the settings document, e.g. `/destinations/0/partitioningPeriod`. */
  path: string
  message: string
}

export type Validated<S extends TSchema> =
  | { ok: true, value: Static<S> }
  | { ok: false, problems: SettingsProblem[] }

function describeExpected (schema: TSchema): string | undefined {
  const options = (schema.anyOf ?? schema.oneOf) as TSchema[] | undefined
  if (options !== undefined && options.every((s) => s.const !== undefined)) {
    return `expected one of ${options.map((s) => JSON.stringify(s.const)).join(', ')}`
  }
  if (typeof schema.pattern === 'string') return `expected a string matching ${schema.pattern}`
  return undefined
}

function describeValue (value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value)
  if (text === undefined) return typeof value
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/**
 * Applies defaults, converts scalar strings (from `${ENV}` references) to the schema's types, and
 * reports every problem with its path. The input is not modified.
 */
export function validate<S extends TSchema> (schema: S, input: unknown, basePath = ''): Validated<S> {
  const value = Value.Convert(schema, Value.Default(schema, Value.Clone(input)))
  if (Value.Check(schema, value)) return { ok: true, value: value as Static<S> }
  const problems: SettingsProblem[] = []
  const seen = new Set<string>()
  for (const error of Value.Errors(schema, value)) {
    const path = basePath + error.path
    if (seen.has(path)) continue
    seen.add(path)
    const expected = describeExpected(error.schema)
    const message = expected !== undefined
      ? `${expected}, got ${describeValue(error.value)}`
      : `${error.message.toLowerCase()}${error.value === undefined ? '' : `, got ${describeValue(error.value)}`}`
    problems.push({ path: path === '' ? '/' : path, message })
  }
  return { ok: false, problems }
}

export function formatProblems (problems: readonly SettingsProblem[]): string {
  return problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')
}
