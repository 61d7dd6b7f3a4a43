import { createServer } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)

export interface GcsEmulator {
  readonly endpoint: string
  stop(): Promise<void>
  /** Starts again on the same port, empty: this emulator keeps objects in memory. */
  restart(): Promise<void>
  dispose(): Promise<void>
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

interface StorageEmulatorInstance {
  _rulesRuntime: { start: () => Promise<void>, stop: () => Promise<void> }
  _rulesManager: { start: () => Promise<void>, stop: () => Promise<void> }
  getName(): string
}

/**
 * The Cloud Storage emulator of firebase-tools (a real implementation of the GCS JSON API), in
 * this process. Its security-rules runtime needs Java and a download and is not used by the JSON
 * API (which acts as an admin), so it is stubbed out.
 */
export async function startGcs (): Promise<GcsEmulator> {
  const { StorageEmulator } = require('firebase-tools/lib/emulator/storage/index.js') as { StorageEmulator: new (args: object) => StorageEmulatorInstance }
  const { EmulatorRegistry } = require('firebase-tools/lib/emulator/registry.js') as {
    EmulatorRegistry: { start: (e: unknown) => Promise<void>, stop: (name: string) => Promise<void> }
  }
  const blobs = await mkdtemp(join(tmpdir(), 'evs-gcs-'))
  // Each emulator keeps its blobs in a folder of its own, so parallel test files never share one.
  class IsolatedStorageEmulator extends StorageEmulator {
    getPersistenceTmpDir (): string {
      return blobs
    }
  }
  const port = await freePort()
  let running = false
  const run = async (): Promise<void> => {
    const emulator = new IsolatedStorageEmulator({ projectId: 'demo-evs', host: '127.0.0.1', port, auto_download: false })
    for (const part of [emulator._rulesRuntime, emulator._rulesManager]) {
      part.start = async () => {}
      part.stop = async () => {}
    }
    await EmulatorRegistry.start(emulator)
    running = true
  }
  await run()
  const stop = async (): Promise<void> => {
    if (!running) return
    running = false
    await EmulatorRegistry.stop(StorageEmulator.prototype.getName.call({}))
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop,
    restart: run,
    async dispose () {
      await stop()
      await rm(blobs, { recursive: true, force: true })
    }
  }
}
