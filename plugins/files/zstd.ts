/**
 * Zstandard through @bokuweb/zstd-wasm (WebAssembly: nothing to build or download at install), loaded
 * on first use, once per thread. Used for `.jsonl.zst` files (one frame per commit, which every zstd
 * reader reads as one stream) and for Parquet pages.
 */
export interface Zstd {
  compress(data: Uint8Array, level?: number): Uint8Array
  /**
   * One frame, whose header gives its content size (as `compress` writes them); for a frame
   * without it, `defaultHeapSize` is the most it may decode to (1 MiB if not given).
   */
  decompress(data: Uint8Array, options?: { defaultHeapSize: number }): Uint8Array
}

let loading: Promise<Zstd> | undefined

export async function loadZstd (): Promise<Zstd> {
  loading ??= import('@bokuweb/zstd-wasm').then(async (m) => {
    const zstd = m.default
    await zstd.init()
    return zstd
  })
  return await loading
}

/**
 * Frames of `data`, as [start, end) offsets, while they are whole; `complete` is where the last
 * whole one ends. The structure (headers and block sizes) is read, not decoded: a crash can only
 * cut the tail, and a cut frame is one whose blocks run past the end or that lacks its last block.
 * Self-contained (no reference outside its body): the digest worker runs this same code.
 */
export function zstdFrames (data: Uint8Array): { frames: Array<[number, number]>, complete: number } {
  const MAGIC = 0xfd2fb528
  const SKIPPABLE_MAGIC = 0x184d2a50
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const frameEnd = (start: number): number => {
    const descriptor = data[start + 4]
    if (descriptor === undefined) return Number.POSITIVE_INFINITY
    const fcsFlag = descriptor >> 6
    const singleSegment = (descriptor >> 5) & 1
    const checksum = (descriptor >> 2) & 1
    const dictionaryIdFlag = descriptor & 3
    let at = start + 5 + (singleSegment === 1 ? 0 : 1) + [0, 1, 2, 4][dictionaryIdFlag]! + (fcsFlag === 0 ? singleSegment : 1 << fcsFlag)
    for (;;) {
      if (at + 3 > data.length) return Number.POSITIVE_INFINITY
      const header = view.getUint16(at, true) | (data[at + 2]! << 16)
      const last = header & 1
      const type = (header >> 1) & 3
      const size = header >> 3
      at += 3 + (type === 1 ? 1 : size)
      if (type === 3) return Number.POSITIVE_INFINITY // reserved: not a frame this writer made
      if (last === 1) break
    }
    return at + (checksum === 1 ? 4 : 0)
  }
  const frames: Array<[number, number]> = []
  let at = 0
  while (at + 4 <= data.length) {
    const magic = view.getUint32(at, true)
    let end: number
    if ((magic & 0xfffffff0) === SKIPPABLE_MAGIC) {
      end = at + 8 + (at + 8 <= data.length ? view.getUint32(at + 4, true) : Number.POSITIVE_INFINITY)
    } else if (magic === MAGIC) {
      end = frameEnd(at)
    } else {
      break
    }
    if (end > data.length) break
    frames.push([at, end])
    at = end
  }
  return { frames, complete: at }
}

/** Decompresses every frame of `data` (e.g. a `.jsonl.zst` file written one frame per commit). */
export async function zstdDecompressAll (data: Uint8Array): Promise<Buffer> {
  const zstd = await loadZstd()
  const { frames, complete } = zstdFrames(data)
  if (complete !== data.length) throw new Error(`not a whole zstd stream: the frames end at byte ${complete} of ${data.length}`)
  return Buffer.concat(frames.map(([start, end]) => zstd.decompress(data.subarray(start, end))))
}
