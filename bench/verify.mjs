// Counting what a server wrote: lines, and for bodies with unique ids, which ids are there, which
// twice, which missing. Ids are laid out per load run and sending thread (see bench/wrk/events.lua):
// run * 1e10 + thread * 1e9 + the event's number in that thread.
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'

export const RUN_STRIDE = 1e10
const THREAD_STRIDE = 1e9
const SEQ = Buffer.from('"seq":')

/** The ids a server was sent: one block per load run and thread, with a count per id. */
export class IdLedger {
  #blocks = new Map()
  #sent = 0

  /** Registers that thread `tid` of the run starting at `idBase` sent `events` ids. */
  add (idBase, tid, events) {
    if (events === 0) return
    const key = (idBase + tid * THREAD_STRIDE) / THREAD_STRIDE
    if (this.#blocks.has(key)) throw new Error(`id block ${key} registered twice`)
    this.#blocks.set(key, new Uint8Array(events))
    this.#sent += events
  }

  get sent () { return this.#sent }

  /** Counts one id seen in the output; false if it was never sent. */
  see (id) {
    const key = Math.floor(id / THREAD_STRIDE)
    const counts = this.#blocks.get(key)
    const offset = id - key * THREAD_STRIDE
    if (counts === undefined || offset >= counts.length) return false
    if (counts[offset] < 255) counts[offset]++
    return true
  }

  /** Ids seen once, more than once, and never. */
  tally () {
    let distinct = 0
    let duplicated = 0
    for (const counts of this.#blocks.values()) {
      for (let i = 0; i < counts.length; i++) {
        const c = counts[i]
        if (c > 0) distinct++
        if (c > 1) duplicated++
      }
    }
    return { distinct, duplicated, missing: this.#sent - distinct }
  }
}

/** Counts the lines of `data` and, with a ledger, records each line's first "seq" value. */
export function scanLines (data, ledger, totals) {
  let start = 0
  while (start < data.length) {
    let end = data.indexOf(10, start)
    if (end === -1) end = data.length
    if (end > start) {
      totals.lines++
      if (ledger !== undefined) {
        const at = data.indexOf(SEQ, start)
        let id = -1
        if (at !== -1 && at < end) {
          id = 0
          let i = at + SEQ.length
          for (; i < end && data[i] >= 48 && data[i] <= 57; i++) id = id * 10 + (data[i] - 48)
          if (i === at + SEQ.length) id = -1
        }
        if (id < 0 || !ledger.see(id)) totals.unknown++
      }
    }
    start = end + 1
  }
}

/** Every file under `dir` (none if it does not exist). */
export async function listFiles (dir) {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name))
  } catch (err) {
    if (err.code === 'ENOENT') return []
    throw err
  }
}

/** The size of every file under `dir`: where a later scan starts (`scanFolder(dir, ledger, since)`). */
export async function folderSizes (dir) {
  const sizes = new Map()
  for (const file of await listFiles(dir)) sizes.set(file, (await stat(file)).size)
  return sizes
}

/**
 * Lines and ids in the files under `dir` (gzip files decompressed). With `since` (folderSizes()
 * taken earlier), only what was appended after it: a server that is not ours (--target) writes the
 * lines of every scenario into the same folder.
 */
export async function scanFolder (dir, ledger, since = undefined) {
  const totals = { lines: 0, unknown: 0, files: 0 }
  for (const file of await listFiles(dir)) {
    const from = since?.get(file) ?? 0
    const data = await readFile(file)
    if (data.length <= from) continue
    totals.files++
    if (file.endsWith('.gz')) {
      // Compressed files are not appended to in place by any server we know of: a file seen before counts once.
      if (from === 0) scanLines(gunzipSync(data), ledger, totals)
    } else {
      scanLines(data.subarray(from), ledger, totals)
    }
  }
  return totals
}
