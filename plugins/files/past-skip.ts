// Resuming a read (`--follow`) drops the bytes already read, block by block, in every format.

/** What is left of `block` once the bytes still to skip (`skip.left`, counted down) are dropped. */
export function pastSkip (block: Buffer, skip: { left: number }): Buffer {
  if (skip.left === 0) return block
  const cut = Math.min(skip.left, block.length)
  skip.left -= cut
  return block.subarray(cut)
}
