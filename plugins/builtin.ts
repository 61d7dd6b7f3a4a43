import type { BuiltinType } from '../core/plugin-api.js'

/**
 * The types this package ships, known by name without a `plugins` entry. Each is imported only
 * when settings use it, so an unused cloud SDK never loads. Entry points hand this table to the
 * server; the core itself names no plugin.
 */
export const builtinTypes: readonly BuiltinType[] = [
  { type: 'filesystem', kind: 'connection', load: async () => await import('./filesystem/index.js') },
  { type: 's3', kind: 'connection', load: async () => await import('./s3/index.js'), packages: ['@aws-sdk/client-s3', '@aws-sdk/lib-storage'] },
  { type: 'azure-blob', kind: 'connection', load: async () => await import('./azure-blob/index.js'), packages: ['@azure/storage-blob', '@azure/identity'] },
  { type: 'gcs', kind: 'connection', load: async () => await import('./gcs/index.js'), packages: ['@google-cloud/storage'] },
  { type: 'files', kind: 'destination', load: async () => await import('./files/index.js') }
]
