/**
 * The plugin API: the one module of the core that plugins import (`dss-event-server/plugin-api`
 * for a plugin installed as a package). Built-in plugins use it and nothing else of the core, so a
 * third party can write any of them again with it. docs/architecture.md shows where it sits.
 *
 * A plugin is a Fastify plugin (wrapped with fastify-plugin) that registers connection or
 * destination types with `fastify.eventServerTypes`:
 *
 *   fastify.eventServerTypes.registerDestinationType({ type, schema, check?, create })
 *
 * The server validates each settings block against the type's schema, then calls `create`.
 */

// The contracts.
export type {
  AppendableConnection, Connection, ConnectionCapabilities, ConnectionContext, ConnectionType, ObjectConnection, ObjectInfo,
  PermanentError, PutOptions
} from './connection.js'
export type {
  Destination, DestinationCheckContext, DestinationContext, DestinationCounter, DestinationHistogram, DestinationMetrics,
  DestinationStats, DestinationType, DestinationVerifyContext, RoutedEvent, VerifyProblem, VerifyProblemKind, VerifyProgress, VerifyReport,
  VerifyRequest
} from './destination.js'
// The optional read hook of a destination type (`dss-event-server query`, docs/query.md).
export type { DestinationReadContext, EventQuery, QueryProblem, QueryStats, StoredEvent, StoredRecord } from './destination.js'
export type { BuiltinType, PluginModule, TypeRegistry } from './registry.js'
export type { SettingsProblem } from './validation.js'

// Option schemas: built with the TypeBox the server validates with.
export { Type, type Static, type TSchema } from 'typebox'

// Helpers for connections.
export { canAppend, isPermanent, markPermanent, writeAndDeleteProbe } from './connection.js'
export { assertSafeKey, encodeSegment, isSafeKey, MAX_SEGMENT_LENGTH } from './path-encoding.js'

// Helpers for destinations: calendar parts in the server's time zone, as folder names use them.
export { ZonedTime, type TimeParts } from './time.js'
// Routing as the server does it: where an event names its topic and routing key, and the
// placeholders when it names none.
export { firstField, ROUTING_KEY_FIELDS, TOPIC_FIELDS, UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from './destination.js'

// Helpers for readers: the stored `serverTimestamp`, wall-clock times of folder names, the query's counters.
export { parseServerTimestamp, timestampAt, wallTime, wallToInstant } from './time.js'
export { equalityNeedle, newQueryStats } from './destination.js'

// Errors a plugin throws or recognises (every code is listed in the README).
export {
  EVS_ERR_CONNECTION_KEY_INVALID, EVS_ERR_CONNECTION_NOT_FOUND, EVS_ERR_CONNECTION_TIMEOUT, EVS_ERR_DESTINATION_UNAVAILABLE, EVS_ERR_QUERY_DESTINATION,
  EVS_ERR_QUERY_STORE, EVS_ERR_RECOVERY, EVS_ERR_SPOOL_FULL
} from './errors.js'

/** The name of the Fastify plugin that decorates `eventServerTypes`: a plugin's `dependencies`. */
export { TYPE_REGISTRY_PLUGIN } from './registry.js'
