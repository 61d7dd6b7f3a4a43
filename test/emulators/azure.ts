import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const AZURITE = join(import.meta.dirname, '..', '..', 'node_modules', 'azurite', 'dist', 'src', 'blob', 'main.js')
// Azurite's well-known development account (public, documented by Microsoft).
export const AZURITE_ACCOUNT = 'devstoreaccount1'
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

export interface AzureEmulator {
  readonly endpoint: string
  readonly connectionString: string
  stop(): Promise<void>
  restart(): Promise<void>
  dispose(): Promise<void>
}

/** Azurite's blob service (a real Azure Storage protocol server) as a child process on loopback. */
export async function startAzurite (): Promise<AzureEmulator> {
  const location = await mkdtemp(join(tmpdir(), 'evs-azurite-'))
  let port = 0
  let child: ChildProcess | undefined
  const run = async (): Promise<void> => {
    const proc = spawn(process.execPath, [AZURITE, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--skipApiVersionCheck', '--disableTelemetry', '--location', location], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    let output = ''
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`azurite did not start:\n${output}`)), 30_000)
      proc.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        const match = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
        if (match !== null) {
          clearTimeout(timer)
          resolve(Number(match[1]))
        }
      })
      proc.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
      proc.on('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`azurite exited with ${code}:\n${output}`))
      })
    })
  }
  await run()
  const stop = async (): Promise<void> => {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null) return
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    // SIGTERM: Azurite saves its metadata on exit; a SIGKILL could lose containers it created.
    proc.kill('SIGTERM')
    await exited
  }
  const endpoint = (): string => `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`
  return {
    get endpoint () { return endpoint() },
    get connectionString () {
      return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint()};`
    },
    stop,
    restart: run,
    async dispose () {
      await stop()
      await rm(location, { recursive: true, force: true })
    }
  }
}
