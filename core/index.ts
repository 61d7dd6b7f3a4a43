export { buildServer, checkSettings, type BuildServerOptions, type EventServer } from './server.js'
export { readSettingsFile, parseCoreSettings, interpolateEnv } from './settings.js'
export { isPermanent, markPermanent, writeAndDeleteProbe } from './connection.js'
export type { Connection, ConnectionCapabilities, ConnectionContext, ConnectionType, ObjectInfo, PermanentError, PutOptions } from './connection.js'
export type {
  Destination, DestinationCheckContext, DestinationContext, DestinationMetrics, DestinationStats, DestinationType, DestinationVerifyContext, RoutedEvent,
  VerifyProblem, VerifyProblemKind, VerifyProgress, VerifyReport, VerifyRequest
} from './destination.js'
export type { TypeRegistry } from './registry.js'
export { assertSafeKey, encodeSegment, isSafeKey } from './path-encoding.js'
export { auditEvent, send, type SenderOptions, type SenderSummary } from './sender.js'
export { UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from './router.js'
export type { SettingsProblem } from './validation.js'
export * as errors from './errors.js'
