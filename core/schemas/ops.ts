import { Type, type Static, type TSchema } from 'typebox'

// The answers of the ops routes: the one source of their types (Static) and of their serializers.

/**
 * An object with any keys: topics and error codes. Type.Record's `^.*$` would not match a key
 * holding a line break (a topic may), and the serializer would then drop it silently.
 */
const MapOf = <T extends TSchema>(value: T) => Type.Unsafe<Record<string, Static<T>>>({ type: 'object', additionalProperties: value })

const Counts = MapOf(Type.Integer())

export const HealthSchema = Type.Object({ status: Type.Literal('ok') })

export const ReadySchema = Type.Object({
  ready: Type.Boolean(),
  /** Why not, one line each: shutting down, memory, a destination. */
  reasons: Type.Array(Type.String()),
  /** Per destination: "ready", or why not. */
  destinations: MapOf(Type.String())
})

// What a destination's ready() says, as it says it: a third-party type may say more.
const DestinationReady = Type.Object({ ready: Type.Boolean(), reason: Type.Optional(Type.String()) }, { additionalProperties: true })

export const DestinationStatsSchema = Type.Object({
  eventsWritten: Type.Integer(),
  bytesWritten: Type.Integer(),
  pendingBytes: Type.Integer(),
  oldestPendingAgeS: Type.Union([Type.Number(), Type.Null()]),
  ready: DestinationReady,
  /** What the destination's type reports of itself (DestinationStats): open files, uploads... */
  details: MapOf(Type.Unknown())
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
    byTopic: MapOf(Type.Object({ received: Type.Integer(), accepted: Type.Integer() }))
  }),
  requests: Type.Object({
    accepted: Type.Integer(),
    rejected: Type.Integer(),
    rejectedByReason: Counts
  }),
  inFlightBytes: Type.Integer(),
  destinations: MapOf(DestinationStatsSchema),
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
