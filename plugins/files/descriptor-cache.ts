import type { FileHandle } from 'node:fs/promises'

/**
 * Open file descriptors, at most `max`, least recently used closed first. A pinned file (a write
 * or a sync in flight) keeps its descriptor; when every descriptor is pinned, an opening waits a
 * turn of the event loop. Many partitions thus cost reopening files, never more descriptors.
 */
export class DescriptorCache<K> {
  readonly #max: number
  readonly #open: (key: K) => Promise<FileHandle>
  /** Open descriptors in least-recently-used order. */
  readonly #handles = new Map<K, FileHandle>()
  readonly #pins = new Map<K, number>()
  /** A descriptor being opened: concurrent callers share it. */
  readonly #opening = new Map<K, Promise<FileHandle>>()
  /** Descriptors being opened or closed: they count against the cap too. */
  #inTransit = 0

  /** `open` opens (or creates) the file of a key. */
  constructor (max: number, open: (key: K) => Promise<FileHandle>) {
    this.#max = max
    this.#open = open
  }

  /** Descriptors open now. */
  get size (): number {
    return this.#handles.size
  }

  has (key: K): boolean {
    return this.#handles.has(key)
  }

  /** Keeps the key's descriptor open (once it has one) until as many `unpin`. */
  pin (key: K): void {
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1)
  }

  unpin (key: K): void {
    const pins = (this.#pins.get(key) ?? 0) - 1
    if (pins > 0) this.#pins.set(key, pins)
    else this.#pins.delete(key)
  }

  /** The key's descriptor, opened if need be. */
  async get (key: K): Promise<FileHandle> {
    const handle = this.#handles.get(key)
    if (handle !== undefined) {
      this.#handles.delete(key)
      this.#handles.set(key, handle)
      return handle
    }
    // A commit and a checkpoint may ask at once: one descriptor, not two.
    let opening = this.#opening.get(key)
    if (opening === undefined) {
      opening = this.#openWithinCap(key).finally(() => { this.#opening.delete(key) })
      this.#opening.set(key, opening)
    }
    return await opening
  }

  /** The key's descriptor, opened if need be, taken out of the cache: the caller closes it. */
  async remove (key: K): Promise<FileHandle> {
    this.pin(key)
    let handle: FileHandle
    try {
      handle = await this.get(key)
    } finally {
      this.unpin(key)
    }
    this.#handles.delete(key)
    return handle
  }

  async #openWithinCap (key: K): Promise<FileHandle> {
    while (this.#handles.size + this.#inTransit >= this.#max) {
      let idle: K | undefined
      for (const k of this.#handles.keys()) {
        if (!this.#pins.has(k)) {
          idle = k
          break
        }
      }
      if (idle === undefined) {
        // Every descriptor is in use by this commit or an earlier one still syncing: wait a turn.
        await new Promise((resolve) => setImmediate(resolve))
        continue
      }
      const handle = this.#handles.get(idle) as FileHandle
      this.#handles.delete(idle)
      this.#inTransit++
      try {
        await handle.close()
      } finally {
        this.#inTransit--
      }
    }
    this.#inTransit++
    let handle: FileHandle
    try {
      handle = await this.#open(key)
    } finally {
      this.#inTransit--
    }
    this.#handles.set(key, handle)
    return handle
  }
}
