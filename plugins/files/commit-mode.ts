import type { FileHandle } from 'node:fs/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { Appender } from './appender.js'
import { Deferred } from './deferred.js'
import type { DescriptorCache } from './descriptor-cache.js'

// What the partition writer shares with its commit mode: the files being written, what a commit
// takes from them, and the contract of a mode (direct-commit.ts or logged-commit.ts).

export interface WriterStats {
  openFiles: number
  activeFiles: number
  filesOpened: number
  filesSealed: number
  bytesWritten: number
  linesWritten: number
  commits: number
  syncs: number
  /** fsyncs of folders, making new files' names durable. */
  folderSyncs: number
}

export type Counters = Omit<WriterStats, 'openFiles' | 'activeFiles'>

/** Lines appended to a file since its last commit, and the promise their appenders wait on. */
export class Batch {
  readonly lines: Buffer[] = []
  bytes = 0
  readonly done = new Deferred()
}

/**
 * A file being written, from its first line to its seal. Its descriptor lives in the descriptor
 * cache; a commit mode may keep more per file (the commit log's deferred bytes).
 */
export class OpenFile {
  /** Lines waiting for the next commit. */
  batch: Batch | undefined
  /** `retired`: takes no more lines, sealed once its last commit is done. `sealed`: being sealed or sealed. */
  state: 'active' | 'retired' | 'sealed' = 'active'
  /** The first write or sync that failed: the file is retired and cut back to `written` when sealed. */
  failure: { readonly error: unknown } | undefined
  /** Exists on disk, its creation journalled. */
  created = false
  /** Bytes committed to this file (durable in it or, with a commit log, in the log). */
  size = 0
  /** Bytes actually in the file. */
  written = 0
  /**
   * Set when the file turns `sealed`: true once it is sealed for good (synced, its folders too,
   * journalled), false if sealing failed or the file keeps bytes that only the commit log holds.
   */
  sealedDurably: Promise<boolean> | undefined
  /** Syncs in flight for this file: sealing waits for them. */
  readonly syncs = new Set<Promise<void>>()

  constructor (
    /** Sequence number and key: they change only if the name was taken (see PartitionWriter). */
    public seq: number,
    public key: string,
    readonly folder: string,
    readonly period: string,
    readonly openedAt: number
  ) {}
}

/** A file's batch taken for one commit: the file is pinned (its descriptor stays open) until answered. */
export interface Taken {
  readonly file: OpenFile
  readonly done: Deferred
  /** performance.now() when taken, for the commit's duration. */
  readonly started: number
  /** The lines as written: gzip-compressed into one member when so configured. */
  readonly data: Buffer[]
  readonly bytes: number
  readonly count: number
  /** The file's descriptor, when the mode needed it at once. */
  readonly handle: FileHandle | undefined
}

export interface CommitContext {
  readonly descriptors: DescriptorCache<OpenFile>
  readonly appender: Appender
  readonly counters: Counters
  readonly logger: FastifyBaseLogger
  now(): number
  /** Syncs every folder whose entries are not durable yet (see CommitMode.defersFolderSync). */
  syncPendingFolders(): Promise<void>
  onWritten?(bytes: number): void
  onSynced?(seconds: number): void
  /** Marks a file failed (logged once) and retires it. */
  fail(file: OpenFile, err: unknown): void
  /** Background work finished: the writer may have become idle. */
  settled(): void
}

/** How a commit makes taken lines durable. Chosen once, when the writer is built. */
export interface CommitMode {
  /** Resolves when a commit may start; lines keep joining the next commit meanwhile. */
  admit(): Promise<void>
  /** Whether a file's descriptor must be open before its lines are committed. */
  needsDescriptor(file: OpenFile): boolean
  /** Makes taken batches durable (or written), settles them and unpins their files. Never rejects. */
  commit(taken: readonly Taken[]): Promise<void>
  /** Brings a retired file's content up to date before it is synced and sealed. */
  beforeSeal(file: OpenFile): Promise<void>
  /** The file is sealed: forget what the mode kept for it. */
  sealed(file: OpenFile): void
  /**
   * A new file's folder entries need not be durable before its first commit is answered: the
   * commit log holds the events (recovery recreates a lost file from it), or durability is `write`.
   * They are synced at the file's seal, or at the checkpoint that lets the log go.
   */
  readonly defersFolderSync: boolean
  /** Nothing of this mode runs in the background (syncs, checkpoints). */
  readonly idle: boolean
  /** Committed bytes held in memory, not yet written to their files. */
  readonly deferredBytes: number
}
