import type { DestinationCounter, DestinationHistogram, DestinationMetrics } from '../../core/plugin-api.js'

// The files destination's own metrics: file words stay here, not in the core's contract.

const COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const UPLOAD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

export interface FilesMetrics {
  /** A file is complete at its final place: sealed on the filesystem, or uploaded. */
  readonly completed: DestinationCounter
  /** One group commit (write and fdatasync) of a file. */
  readonly commit: DestinationHistogram
  /** One upload attempt, by outcome: ok, failed, quarantined. */
  readonly upload: DestinationHistogram
  error(err: unknown): void
}

export interface FilesGauges {
  openFiles(): number | undefined
  uploadRetries(): number | undefined
  quarantined(): number | undefined
}

export function filesMetrics (metrics: DestinationMetrics, gauges: FilesGauges): FilesMetrics {
  metrics.gauge('evs_open_files', 'Files open for writing', gauges.openFiles)
  metrics.gauge('evs_upload_retries', 'Failed upload attempts so far, each followed by a retry', gauges.uploadRetries)
  metrics.gauge('evs_quarantined_files', 'Files the store refused for good, kept in quarantine', gauges.quarantined)
  return {
    completed: metrics.counter('evs_files_completed_total', 'Files completed (filesystem) or objects uploaded (object stores)'),
    commit: metrics.histogram('evs_fsync_duration_seconds', 'Duration of one group commit (write and fdatasync)', COMMIT_BUCKETS),
    upload: metrics.histogram('evs_upload_duration_seconds', 'Duration of one upload attempt, by outcome (ok, failed, quarantined)', UPLOAD_BUCKETS, 'outcome'),
    error: (err) => { metrics.error(err) }
  }
}
