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
