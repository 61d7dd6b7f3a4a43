import { watch, type FSWatcher } from 'node:fs'
import { dirname } from 'node:path'
import type { AppendableConnection } from '../../core/plugin-api.js'
import type { PlannedFile } from './read-plan.js'

/** Past this many watches, the rest is left to the poll (inotify's per-user limit is shared). */
const MAX_WATCHED = 1000

/**
 * Wakes a `--follow` on the filesystem as soon as something changes where it reads: a file grows,
 * a file or folder appears. fs.watch is not reliable everywhere (network filesystems, some
 * containers' mounts), so the follower keeps polling as well, less often; a watch that cannot be
 * set up (a missing folder, no watches left) is left to that poll.
 */
export class ChangeWatch {
  readonly #watchers = new Map<string, FSWatcher>()
  #changed = false
  #wake: (() => void) | undefined
  #closed = false

  get size (): number {
    return this.#watchers.size
  }

  /** Watches exactly `paths` from now on (at most MAX_WATCHED): new ones are added, others closed. Returns how many were added. */
  set (paths: readonly string[]): number {
    const wanted = new Set(paths.slice(0, MAX_WATCHED))
    for (const [path, watcher] of this.#watchers) {
      if (wanted.has(path)) continue
      watcher.close()
      this.#watchers.delete(path)
    }
    let added = 0
    for (const path of wanted) {
      if (this.#closed || this.#watchers.has(path)) continue
      let watcher: FSWatcher
      try {
        // Persistent (it holds the process, as the follower's timer does): a watch left open would show.
        watcher = watch(path, () => { this.#signal() })
      } catch {
        continue
      }
      watcher.on('error', () => {
        watcher.close()
        if (this.#watchers.get(path) === watcher) this.#watchers.delete(path)
        this.#signal()
      })
      this.#watchers.set(path, watcher)
      added++
    }
    return added
  }

  /** Something may have changed: the next wait returns at once. */
  touch (): void {
    this.#signal()
  }

  #signal (): void {
    this.#changed = true
    this.#wake?.()
  }

  /** Resolves at the first change since the last call (at once if there was one), after `ms` at the latest, or on abort. */
  async wait (ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (!this.#changed && !this.#closed && signal?.aborted !== true) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, ms)
        this.#wake = done
        signal?.addEventListener('abort', done, { once: true })
        function done (): void {
          clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          resolve()
        }
      })
      this.#wake = undefined
    }
    this.#changed = false
  }

  close (): void {
    this.#closed = true
    for (const watcher of this.#watchers.values()) watcher.close()
    this.#watchers.clear()
    this.#wake?.()
  }
}

/**
 * What a follower on a local connection watches: the destination's folder (and the connection's
 * root, in case the destination's folder is not there yet), and every folder from there down to
 * those of the files listed, newest partitions first, so that new topic, routing-key and date
 * folders and new files are seen; and the files of partitions not yet ended, which may grow.
 */
export function watchedPaths (connection: AppendableConnection, rootKey: string, files: readonly PlannedFile[], now: number): string[] {
  const rootSegments = rootKey === '' ? [] : rootKey.split('/')
  const folders = new Set<string>([dirname(connection.localPath(rootSegments[0] ?? 'x'))])
  for (let i = 1; i <= rootSegments.length; i++) folders.add(connection.localPath(rootSegments.slice(0, i).join('/')))
  const open: string[] = []
  const depth = rootSegments.length
  for (const file of [...files].sort((a, b) => b.end - a.end)) {
    const segments = file.key.split('/')
    for (let i = Math.max(1, depth); i < segments.length; i++) folders.add(connection.localPath(segments.slice(0, i).join('/')))
    if (file.end > now && !file.key.endsWith('.parquet')) open.push(connection.localPath(file.key))
    if (folders.size >= MAX_WATCHED) break
  }
  return [...folders, ...open]
}
