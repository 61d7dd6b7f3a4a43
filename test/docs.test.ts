import { describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as errors from '../core/errors.js'
import { DestinationCommonSchema, SecuritySettingsSchema, ServerSettingsSchema, TlsSettingsSchema } from '../core/schemas/settings.js'
import { FilesDestinationSchema } from '../plugins/files/index.js'
import { FilesystemOptionsSchema } from '../plugins/filesystem/index.js'
import { S3OptionsSchema } from '../plugins/s3/index.js'
import { AzureBlobOptionsSchema } from '../plugins/azure-blob/index.js'
import { GcsOptionsSchema } from '../plugins/gcs/index.js'

const root = join(import.meta.dirname, '..')

describe('the docs stay true to the code', () => {
  it('the README lists every error code in its table, and lists none that does not exist', async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8')
    const codes = Object.keys(errors).filter((k) => k.startsWith('EVS_ERR_'))
    expect(codes.length).toBeGreaterThan(10)
    const documented = [...readme.matchAll(/^\| `(EVS_ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1])
    expect(codes.filter((code) => !documented.includes(code))).toEqual([])
    expect(documented.filter((code) => !codes.includes(code as string))).toEqual([])
  })

  it('every code the docs or the sources name is one of core/errors.ts', async () => {
    const codes = new Set(Object.keys(errors))
    const files = ['README.md', ...(await readdir(join(root, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))]
    for (const folder of ['core', 'plugins']) {
      files.push(...(await readdir(join(root, folder), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => join(folder, f)))
    }
    const unknown: string[] = []
    for (const file of files) {
      const text = await readFile(join(root, file), 'utf8')
      for (const [code] of text.matchAll(/\bEVS_ERR_[A-Z_]*[A-Z]\b/g)) if (!codes.has(code)) unknown.push(`${file}: ${code}`)
    }
    expect(files.length).toBeGreaterThan(20)
    expect(unknown).toEqual([])
  })

  it('docs/settings.md documents every settings field', async () => {
    const doc = await readFile(join(root, 'docs', 'settings.md'), 'utf8')
    const fields = [ServerSettingsSchema, TlsSettingsSchema, SecuritySettingsSchema, DestinationCommonSchema, FilesDestinationSchema, FilesystemOptionsSchema, S3OptionsSchema, AzureBlobOptionsSchema, GcsOptionsSchema]
      .flatMap((schema) => Object.keys(schema.properties))
    expect(fields.filter((field) => !doc.includes(`| \`${field}\` |`))).toEqual([])
  })
  it('the Grafana dashboard and docs/operations.md use only metrics the server exposes', async () => {
    const { buildServer } = await import('../index.js')
    const { tempDir } = await import('./helpers.js')
    const app = await buildServer({ document: {}, baseDir: await tempDir(), logger: false })
    const exposed = new Set((await app.eventServer.metrics.registry.getMetricsAsJSON()).map((m) => m.name))
    await app.close()
    const dashboard = await readFile(join(root, 'docs', 'grafana-dashboard.json'), 'utf8')
    const operations = await readFile(join(root, 'docs', 'operations.md'), 'utf8')
    const used = new Set([...`${dashboard}\n${operations}`.matchAll(/\bevs_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, '')))
    expect([...used].filter((name) => !exposed.has(name))).toEqual([])
    expect([...exposed].filter((name) => !operations.includes(`\`${name}\``))).toEqual([])
    JSON.parse(dashboard)
  })
})
