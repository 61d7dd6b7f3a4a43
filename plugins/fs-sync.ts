import { open, rmdir } from 'node:fs/promises'
import { dirname } from 'node:path'

/** Makes a folder's entries (created, renamed or removed files) durable. */
export async function fsyncDir (path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } catch (err) {
    // Some filesystems cannot sync a folder; the data itself was synced.
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw err
  } finally {
    await handle.close()
  }
}

/**
 * The folders whose entries make a new file durable: its own folder, and the parent of every
 * folder that mkdir created for it (`firstCreated`, as `mkdir(…, { recursive: true })` returns).
 */
export function foldersOfNewFile (folder: string, firstCreated: string | undefined): string[] {
  const folders = [folder]
  if (firstCreated === undefined) return folders
  const stop = dirname(firstCreated)
  for (let current = folder; current !== stop && current !== dirname(current); current = dirname(current)) folders.push(dirname(current))
  return folders
}

/**
 * fsyncs every folder, `parallel` at a time: many at once would queue ahead of the commits in
 * libuv's thread pool. A folder removed meanwhile needs no sync (what it held is gone with it).
 */
export async function fsyncDirs (folders: Iterable<string>, parallel: number): Promise<void> {
  const queue = [...folders]
  const worker = async (): Promise<void> => {
    for (let folder = queue.pop(); folder !== undefined; folder = queue.pop()) {
      try {
        await fsyncDir(folder)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, queue.length) }, worker))
}

/** Removes folders left empty below `root`, deepest first (a writer recreates one that races with this). */
export async function pruneEmptyFolders (folder: string, root: string): Promise<void> {
  for (let current = folder; current.startsWith(root + '/'); current = dirname(current)) {
    try {
      await rmdir(current)
    } catch {
      return
    }
  }
}
