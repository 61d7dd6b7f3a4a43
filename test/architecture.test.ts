import { describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'

// The import rules of docs/architecture.md, checked on the sources.

const root = join(import.meta.dirname, '..')

async function sources (folder: string): Promise<string[]> {
  const entries = await readdir(join(root, folder), { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => relative(root, join(e.parentPath, e.name)).split(sep).join('/'))
    .sort()
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;'"]*?from\s+'([^']+)'|(?:^|\n)\s*import\s+'([^']+)'|\bimport\(\s*'([^']+)'\s*\)/g

/** What a source file imports: repository paths for relative imports, package names otherwise. */
async function importsOf (file: string): Promise<string[]> {
  const text = await readFile(join(root, file), 'utf8')
  return [...text.matchAll(IMPORT)].map((m) => {
    const spec = (m[1] ?? m[2] ?? m[3]) as string
    if (!spec.startsWith('.')) return spec
    return relative(root, join(root, dirname(file), spec)).split(sep).join('/').replace(/\.js$/, '.ts')
  })
}

async function graph (files: readonly string[]): Promise<Map<string, string[]>> {
  return new Map(await Promise.all(files.map(async (f) => [f, await importsOf(f)] as const)))
}

describe('the import rules of docs/architecture.md', () => {
  it('the scanner sees imports of every form', async () => {
    const files = await graph(['plugins/builtin.ts', 'plugins/files/index.ts', 'core/server.ts'])
    expect(files.get('plugins/builtin.ts')).toEqual(expect.arrayContaining(['core/plugin-api.ts', 'plugins/files/index.ts', 'plugins/s3/index.ts']))
    expect(files.get('plugins/files/index.ts')).toEqual(expect.arrayContaining(['core/plugin-api.ts', 'plugins/files/journal.ts', 'fastify-plugin', 'node:path']))
    expect(files.get('core/server.ts')).toEqual(expect.arrayContaining(['core/pipeline.ts', 'fastify']))
  })

  it('the core never imports a plugin, nor the package entry', async () => {
    const core = await graph(await sources('core'))
    const outside: string[] = []
    for (const [file, imports] of core) {
      for (const target of imports) {
        if (target.startsWith('plugins/') || target.startsWith('cli/') || target === 'index.ts' || target.startsWith('../')) outside.push(`${file} -> ${target}`)
      }
    }
    expect(outside).toEqual([])
  })

  it('the command line reaches plugins only through the package entry', async () => {
    const cli = await graph(await sources('cli'))
    expect(cli.size).toBeGreaterThan(5)
    const offending: string[] = []
    for (const [file, imports] of cli) {
      for (const target of imports) if (target.startsWith('plugins/')) offending.push(`${file} -> ${target}`)
    }
    expect(offending).toEqual([])
    expect([...cli.values()].flat()).toContain('index.ts')
  })

  it('nothing but the bin script imports the command line', async () => {
    const all = await graph([...await sources('core'), ...await sources('plugins'), 'index.ts'])
    const offending = [...all].flatMap(([file, imports]) => imports.filter((t) => t.startsWith('cli/')).map((t) => `${file} -> ${t}`))
    expect(offending).toEqual([])
  })

  it('plugins import core/plugin-api.ts and nothing else of the core', async () => {
    const plugins = await graph(await sources('plugins'))
    expect(plugins.size).toBeGreaterThan(10)
    const offending: string[] = []
    for (const [file, imports] of plugins) {
      for (const target of imports) {
        if (target === 'core/plugin-api.ts' || target.startsWith('plugins/') || !target.includes('/') || !target.endsWith('.ts')) continue
        offending.push(`${file} -> ${target}`)
      }
    }
    expect(offending).toEqual([])
  })

  it('the plugin API is a leaf: it reaches only the contract modules of the core', async () => {
    const core = await graph(await sources('core'))
    const reached = new Set<string>()
    const visit = (file: string): void => {
      if (reached.has(file)) return
      reached.add(file)
      for (const target of core.get(file) ?? []) if (target.startsWith('core/')) visit(target)
    }
    visit('core/plugin-api.ts')
    expect([...reached].sort()).toEqual([
      'core/connection.ts', 'core/destination.ts', 'core/errors.ts', 'core/path-encoding.ts',
      'core/plugin-api.ts', 'core/registry.ts', 'core/time.ts', 'core/validation.ts'
    ])
  })

  it('the example third-party plugin imports the plugin API as a package, and nothing else of this one', async () => {
    const imports = await importsOf('test/fixtures/dss-event-server-plugin-webhook/index.js')
    expect(imports).toContain('dss-event-server/plugin-api')
    // fastify: only its types, in a JSDoc comment.
    expect(imports.filter((i) => !['dss-event-server/plugin-api', 'fastify-plugin', 'fastify'].includes(i) && !i.startsWith('node:'))).toEqual([])
  })
})
