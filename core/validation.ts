import { Settings } from 'typebox/system'
import { Value } from 'typebox/value'
import type { Static, TSchema } from 'typebox'

export interface SettingsProblem {
  /** JSON-pointer-like path in the settings document, e.g. `/destinations/0/partitioningPeriod`. */
  path: string
  message: string
}

export type Validated<S extends TSchema> =
  | { ok: true, value: Static<S> }
  | { ok: false, problems: SettingsProblem[] }

type ValidationError = ReturnType<typeof Value.Errors>[number]

/** Every problem of a settings document is reported at once; TypeBox stops at 8 by default. */
const MAX_ERRORS = 500

/** Value.Errors with room for every problem of a settings document (a trusted, small input). */
function errorsOf (schema: TSchema, value: unknown): ValidationError[] {
  const { maxErrors } = Settings.Get()
  Settings.Set({ maxErrors: MAX_ERRORS })
  try {
    return Value.Errors(schema, value)
  } finally {
    Settings.Set({ maxErrors })
  }
}

/** The parts of a JSON schema messages look at. */
interface SchemaNode { anyOf?: SchemaNode[], oneOf?: SchemaNode[], const?: unknown, type?: unknown }

function describeValue (value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value)
  if (text === undefined) return typeof value
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

function unescapePointer (segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~')
}

/** What a JSON pointer (`/a/0/b`, or `#/properties/a` for schemas) designates in `root`. */
function at (root: unknown, pointer: string): unknown {
  let node = root
  for (const segment of pointer.replace(/^#/, '').split('/').slice(1)) {
    if (typeof node !== 'object' || node === null) return undefined
    node = (node as Record<string, unknown>)[unescapePointer(segment)]
  }
  return node
}

const A_TYPE: Record<string, string> = { integer: 'an integer', object: 'an object', array: 'an array', boolean: 'a boolean', number: 'a number', string: 'a string', null: 'null' }

/** What was expected, in the words of the settings docs; undefined leaves TypeBox's own message. */
function expected (error: ValidationError, schema: SchemaNode | undefined): string | undefined {
  const number = schema?.type === 'integer' ? 'an integer' : 'a number'
  switch (error.keyword) {
    case 'type': {
      const types = ([] as string[]).concat(error.params.type)
      return `expected ${types.map((t) => A_TYPE[t] ?? t).join(' or ')}`
    }
    case 'anyOf':
    case 'oneOf': {
      const options = schema?.anyOf ?? schema?.oneOf
      if (options !== undefined && options.every((s) => s.const !== undefined)) {
        return `expected one of ${options.map((s) => JSON.stringify(s.const)).join(', ')}`
      }
      return undefined
    }
    case 'const': return `expected ${JSON.stringify(error.params.allowedValue)}`
    case 'enum': return `expected one of ${error.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`
    case 'pattern': return `expected a string matching ${String(error.params.pattern)}`
    case 'minLength': return error.params.limit === 1 ? 'expected a non-empty string' : `expected a string of at least ${error.params.limit} characters`
    case 'maxLength': return `expected a string of at most ${error.params.limit} characters`
    case 'minimum': return `expected ${number} greater than or equal to ${error.params.limit}`
    case 'maximum': return `expected ${number} less than or equal to ${error.params.limit}`
    case 'exclusiveMinimum': return `expected ${number} greater than ${error.params.limit}`
    case 'exclusiveMaximum': return `expected ${number} less than ${error.params.limit}`
    case 'minItems': return `expected at least ${error.params.limit} item${error.params.limit === 1 ? '' : 's'}`
    case 'maxItems': return `expected at most ${error.params.limit} item${error.params.limit === 1 ? '' : 's'}`
    default: return undefined
  }
}

/** One problem per path: the error of the outermost schema wins (a union over its members). */
function problemsOf (schema: TSchema, value: unknown, basePath: string): SettingsProblem[] {
  const byPath = new Map<string, { depth: number, message: string }>()
  const add = (path: string, depth: number, message: string): void => {
    const found = byPath.get(path)
    if (found === undefined || depth < found.depth) byPath.set(path, { depth, message })
  }
  for (const error of errorsOf(schema, value)) {
    const depth = error.schemaPath.split('/').length
    if (error.keyword === 'required') {
      for (const name of error.params.requiredProperties) add(`${error.instancePath}/${name}`, depth, 'expected required property')
      continue
    }
    if (error.keyword === 'additionalProperties') {
      for (const name of error.params.additionalProperties) {
        const path = `${error.instancePath}/${name}`
        add(path, depth, `unexpected property, got ${describeValue(at(value, path))}`)
      }
      continue
    }
    // `additionalProperties: false` reports each extra property as a false schema too.
    if (error.keyword === 'boolean' && error.schemaPath.endsWith('/additionalProperties')) {
      add(error.instancePath, depth - 1, `unexpected property, got ${describeValue(at(value, error.instancePath))}`)
      continue
    }
    const got = at(value, error.instancePath)
    const message = expected(error, at(schema, error.schemaPath) as SchemaNode | undefined) ?? error.message
    add(error.instancePath, depth, `${message}, got ${describeValue(got)}`)
  }
  return [...byPath].map(([path, { message }]) => ({ path: basePath + path === '' ? '/' : basePath + path, message }))
}

/**
 * Applies defaults, converts scalar strings (from `${ENV}` references) to the schema's types, and
 * reports every problem with its path. The input is not modified.
 */
export function validate<S extends TSchema> (schema: S, input: unknown, basePath = ''): Validated<S> {
  const value = Value.Convert(schema, Value.Default(schema, Value.Clone(input)))
  if (Value.Check(schema, value)) return { ok: true, value: value as Static<S> }
  return { ok: false, problems: problemsOf(schema, value, basePath) }
}

export function formatProblems (problems: readonly SettingsProblem[]): string {
  return problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')
}
