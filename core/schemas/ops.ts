import { Type, type Static } from 'typebox'

// The answers of the ops routes: the one source of their types (Static) and of their serializers.

const Counts = Type.Record(Type.String(), Type.Integer())

export const HealthSchema = Type.Object({ status: Type.Literal('ok') })

export const ReadySchema = Type.Object({
  ready: Type.Boolean(),
  /** Why not, one line each: shutting down, memory, a destination. */
  reasons: Type.Array(Type.String()),
  /** Per destination: "ready", or why not. */
  destinations: Type.Record(Type.String(), Type.String())
})

const DestinationReady = Type.Union([
  Type.Object({ ready: Type.Literal(true) }),
  Type.Object({ ready: Type.Literal(false), reason: Type.String() })
])

export const DestinationStatsSchema = Type.Object({
  eventsWritten: Type.Integer(),
  bytesWritten: Type.Integer(),
  pendingBytes: Type.Integer(),
  oldestPendingAgeS: Type.Union([Type.Number(), Type.Null()]),
  ready: DestinationReady,
  /** What the destination's type reports of itself (DestinationStats): open files, uploads... */
  details: Type.Record(Type.String(), Type.Unknown())
})

export const StatsSchema = Type.Object({
  instanceId: Type.String(),
  startedAt: Type.String(),
  uptimeS: Type.Number(),
  events: Type.Object({
    received: Type.Integer(),
    accepted: Type.Integer(),
    rejected: Type.Integer(),
    rejectedByReason: Counts,
    byTopic: Type.Record(Type.String(), Type.Object({ received: Type.Integer(), accepted: Type.Integer() }))
  }),
  requests: Type.Object({
    accepted: Type.Integer(),
    rejected: Type.Integer(),
    rejectedByReason: Counts
  }),
  inFlightBytes: Type.Integer(),
  destinations: Type.Record(Type.String(), DestinationStatsSchema),
  lastError: Type.Union([Type.Object({ message: Type.String(), at: Type.String(), where: Type.String() }), Type.Null()])
})

export const ReloadSchema = Type.Object({
  status: Type.Literal('reloaded'),
  warnings: Type.Array(Type.String()),
  /** The destinations in force after the reload. */
  destinations: Type.Array(Type.String())
})

export type ReadyAnswer = Static<typeof ReadySchema>
export type StatsAnswer = Static<typeof StatsSchema>
