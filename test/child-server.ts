import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { onCleanup } from './helpers.js'

export const BIN = join(import.meta.dirname, '..', 'bin', 'dss-event-server.js')

export interface ChildServer {
  readonly process: ChildProcess
  readonly url: string
  readonly output: () => string
  /** Resolves with the exit code (or the signal's name). */
  readonly exited: Promise<number | string>
}

/** Runs the real command line (`dss-event-server start`) as its own process; resolves once it listens. */
export async function spawnServer (args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<ChildServer> {
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'start', '--host', '127.0.0.1', '--port', '0', ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'))
  })
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 20_000)
    const onData = (): void => {
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (match !== null) {
        clearTimeout(timer)
        resolve(match[1] as string)
      }
    }
    child.stdout.on('data', onData)
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`server exited with ${code} before listening:\n${output}`))
    })
  })
  return { process: child, url, output: () => output, exited }
}
