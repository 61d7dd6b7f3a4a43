import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import S3rver from 's3rver'

export interface S3Emulator {
  readonly endpoint: string
  readonly port: number
  readonly directory: string
  stop(): Promise<void>
  /** Starts again on the same port and data folder (after `stop`, to model an outage). */
  restart(): Promise<void>
  dispose(): Promise<void>
}

export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', region: 'us-east-1' }

// s3rver answers streamed uploads correctly only without the SDK's default checksums (aws-chunked
// trailers); the SHA-256 headers of uploadChecksum go in plain headers, which it accepts (and ignores).
export const S3_COMPAT = { forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED', uploadChecksum: 'SHA256' } as const

/**
 * s3rver answers a Delimiter listing only with the folders that hold an object directly (it stops
 * walking its own directories one level below the prefix); S3, MinIO and Ceph list them all.
 */
export const S3RVER_SHALLOW_FOLDERS = 's3rver lists with a Delimiter only the folders that hold an object directly'

/** s3rver (a real S3 protocol server) on loopback, with the given buckets. */
export async function startS3 (buckets: string[]): Promise<S3Emulator> {
  const directory = await mkdtemp(join(tmpdir(), 'evs-s3rver-'))
  let port = 0
  let server: S3rver | undefined
  const run = async (): Promise<void> => {
    server = new S3rver({ address: '127.0.0.1', port, silent: true, directory, configureBuckets: buckets.map((name) => ({ name })) })
    const info = await server.run()
    port = info.port
  }
  await run()
  const stop = async (): Promise<void> => {
    if (server === undefined) return
    const s = server
    server = undefined
    // Open keep-alive sockets would keep the port busy; an outage drops them anyway.
    ;(s as unknown as { httpServer?: { closeAllConnections?: () => void } }).httpServer?.closeAllConnections?.()
    await s.close()
  }
  return {
    get endpoint () { return `http://127.0.0.1:${port}` },
    get port () { return port },
    directory,
    stop,
    restart: run,
    async dispose () {
      await stop()
      await rm(directory, { recursive: true, force: true })
    }
  }
}
