import { Type, type Static } from 'typebox'

// The one source of truth for the settings document. Type-specific options of connections and
// destinations are validated by the schema their plugin registers (see core/registry.ts).

export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
// No underscore: file names are `<instanceId>_<destination>_<seq>`, so the first "_" must end the id.
export const INSTANCE_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$'

export const DEFAULT_PORT = 11004

const AuthKey = Type.Object({
  key: Type.String({ minLength: 1, description: 'a secret; write it as ${ENV_VAR} to keep it out of the file' })
}, { additionalProperties: false })

export const TlsSettingsSchema = Type.Object({
  cert: Type.String({ minLength: 1, description: 'PEM certificate chain file' }),
  key: Type.String({ minLength: 1, description: 'PEM private key file' }),
  ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA file: clients must present a certificate it signed' }))
}, { additionalProperties: false })

export const ServerSettingsSchema = Type.Object({
  host: Type.String({ default: '0.0.0.0', minLength: 1 }),
  port: Type.Integer({ default: DEFAULT_PORT, minimum: 0, maximum: 65535 }),
  bodyLimit: Type.Integer({ default: 64 * 1024 * 1024, minimum: 1024 }),
  instanceId: Type.Optional(Type.String({ pattern: INSTANCE_ID_PATTERN })),
  timeZone: Type.String({ default: 'UTC', minLength: 1 }),
  stateDir: Type.String({ default: './data/state', minLength: 1 }),
  trustedProxies: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
  shutdownTimeoutS: Type.Number({ default: 30, minimum: 0 }),
  maxInFlightBytes: Type.Integer({ default: 256 * 1024 * 1024, minimum: 1024 }),
  requestTimeoutS: Type.Number({ default: 300, exclusiveMinimum: 0 }),
  bodyIdleTimeoutS: Type.Number({ default: 30, exclusiveMinimum: 0 }),
  headersTimeoutS: Type.Number({ default: 30, exclusiveMinimum: 0 }),
  keepAliveTimeoutS: Type.Number({ default: 72, exclusiveMinimum: 0 }),
  tls: Type.Optional(TlsSettingsSchema),
  logLevel: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' })
}, { additionalProperties: false, default: {} })

export const SecuritySettingsSchema = Type.Object({
  requireAuthenticationForEvents: Type.Boolean({ default: false }),
  eventsAuthenticationKeys: Type.Array(AuthKey, { default: [] }),
  requireAuthenticationForStats: Type.Boolean({ default: false }),
  statsAuthenticationKeys: Type.Array(AuthKey, { default: [] }),
  adminAuthenticationKeys: Type.Array(AuthKey, { default: [] }),
  authKeyHeader: Type.String({ default: 'x-event-server-key', pattern: '^[A-Za-z0-9-]+$' })
}, { additionalProperties: false, default: {} })

export const ConnectionSettingsSchema = Type.Object({
  type: Type.String({ minLength: 1 })
}, { additionalProperties: true })

export const Filtering = Type.Union([Type.Literal('ALL'), Type.Literal('SELECTED')], { default: 'ALL' })

// The fields every destination has, whatever its type: DSS's target filters.
export const DestinationCommonSchema = Type.Object({
  name: Type.String({ pattern: NAME_PATTERN }),
  type: Type.String({ default: 'files', minLength: 1 }),
  topicsFiltering: Filtering,
  topics: Type.Array(Type.String(), { default: [] }),
  routingKeysFiltering: Filtering,
  routingKeys: Type.Array(Type.String(), { default: [] }),
  requiredAuthKey: Type.Optional(Type.String({ minLength: 1 }))
}, { additionalProperties: true })

export const DESTINATION_COMMON_KEYS = Object.keys(DestinationCommonSchema.properties)

export const SettingsSchema = Type.Object({
  plugins: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
  server: ServerSettingsSchema,
  security: SecuritySettingsSchema,
  connections: Type.Record(Type.String({ pattern: NAME_PATTERN }), ConnectionSettingsSchema, { default: {} }),
  destinations: Type.Array(DestinationCommonSchema, { default: [] })
}, { additionalProperties: false })

export type Settings = Static<typeof SettingsSchema>
export type ServerSettings = Static<typeof ServerSettingsSchema>
export type TlsSettings = Static<typeof TlsSettingsSchema>
export type SecuritySettings = Static<typeof SecuritySettingsSchema>
export type ConnectionSettings = Static<typeof ConnectionSettingsSchema>
export type DestinationCommonSettings = Static<typeof DestinationCommonSchema>
