import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { BlobHTTPHeaders, BlobImmutabilityPolicy, BlockBlobClient } from '@azure/storage-blob'

export interface CheckedUploadOptions {
  blockSizeBytes: number
  concurrency: number
  blobHTTPHeaders: BlobHTTPHeaders
  abortSignal?: AbortSignal
  immutabilityPolicy?: BlobImmutabilityPolicy
  /** MD5 of the whole body (base64), computed beforehand: the upload fails if the bytes read differ. */
  md5?: string
}

/**
 * Uploads a stream as staged blocks, each with its MD5 (Azure refuses a block whose bytes do not
 * match it), then commits them with the MD5 of the whole blob as its Content-MD5 property. The SDK's
 * `uploadStream` sends no per-block checksum, hence this. Uncommitted blocks leave an earlier blob
 * as it was; Azure discards them after a week.
 */
export async function uploadChecked (blob: BlockBlobClient, body: Readable, options: CheckedUploadOptions): Promise<void> {
  const whole = createHash('md5')
  const ids: string[] = []
  const running = new Set<Promise<void>>()
  let failure: unknown
  const stage = async (data: Buffer): Promise<void> => {
    // Ids of one blob must all have the same length.
    const id = Buffer.from(`evs-block-${String(ids.length).padStart(8, '0')}`).toString('base64')
    ids.push(id)
    whole.update(data)
    const transactionalContentMD5 = createHash('md5').update(data).digest()
    const staged = blob.stageBlock(id, data, data.length, { transactionalContentMD5, ...(options.abortSignal !== undefined ? { abortSignal: options.abortSignal } : {}) })
      .then(() => {}, (err: unknown) => { failure ??= err })
    running.add(staged)
    void staged.finally(() => running.delete(staged))
    while (running.size >= options.concurrency) await Promise.race(running)
    if (failure !== undefined) throw failure
  }
  let pending: Buffer[] = []
  let pendingBytes = 0
  for await (const chunk of body) {
    pending.push(chunk as Buffer)
    pendingBytes += (chunk as Buffer).length
    if (pendingBytes < options.blockSizeBytes) continue
    let all = Buffer.concat(pending)
    while (all.length >= options.blockSizeBytes) {
      await stage(all.subarray(0, options.blockSizeBytes))
      all = all.subarray(options.blockSizeBytes)
    }
    pending = all.length > 0 ? [all] : []
    pendingBytes = all.length
  }
  if (pendingBytes > 0) await stage(Buffer.concat(pending))
  await Promise.all(running)
  if (failure !== undefined) throw failure
  const md5 = whole.digest()
  if (options.md5 !== undefined && md5.toString('base64') !== options.md5) {
    throw new Error('the bytes read for the upload do not match the MD5 computed beforehand; nothing was committed')
  }
  await blob.commitBlockList(ids, {
    blobHTTPHeaders: { ...options.blobHTTPHeaders, blobContentMD5: md5 },
    ...(options.abortSignal !== undefined ? { abortSignal: options.abortSignal } : {}),
    ...(options.immutabilityPolicy !== undefined ? { immutabilityPolicy: options.immutabilityPolicy } : {})
  })
}
