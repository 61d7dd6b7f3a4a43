import { open } from 'node:fs/promises'

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
