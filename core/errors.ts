import createError from '@fastify/error'

// Every error the server raises comes from here: codes are stable and listed in the README.
// Messages never contain auth keys, message bodies or credentials.

export const EVS_ERR_SETTINGS_INVALID = createError<'EVS_ERR_SETTINGS_INVALID', 500, [string]>(
  'EVS_ERR_SETTINGS_INVALID', 'Invalid settings:\n%s', 500)
export const EVS_ERR_SETTINGS_READ = createError<'EVS_ERR_SETTINGS_READ', 500, [string, string]>(
  'EVS_ERR_SETTINGS_READ', 'Cannot read settings file %s: %s', 500)
export const EVS_ERR_PLUGIN_LOAD = createError<'EVS_ERR_PLUGIN_LOAD', 500, [string, string]>(
  'EVS_ERR_PLUGIN_LOAD', 'Cannot load plugin "%s": %s', 500)
export const EVS_ERR_PLUGIN_TYPE_DUPLICATE = createError<'EVS_ERR_PLUGIN_TYPE_DUPLICATE', 500, [string, string]>(
  'EVS_ERR_PLUGIN_TYPE_DUPLICATE', 'A %s type named "%s" is already registered', 500)

export const EVS_ERR_METRIC_CONFLICT = createError<'EVS_ERR_METRIC_CONFLICT', 500, [string]>(
  'EVS_ERR_METRIC_CONFLICT', 'Metric "%s" is declared again with another kind, help or label, or its name is taken or not of the form evs_[a-z0-9_]+', 500)

export const EVS_ERR_AUTH_REQUIRED = createError<'EVS_ERR_AUTH_REQUIRED', 401, []>(
  'EVS_ERR_AUTH_REQUIRED',
  'Authentication required: send an events key as "Authorization: Bearer <key>", as the password of Basic auth, or in the configured key header',
  401)
export const EVS_ERR_AUTH_INVALID = createError<'EVS_ERR_AUTH_INVALID', 401, []>(
  'EVS_ERR_AUTH_INVALID', 'The key sent is not one of the configured keys', 401)

export const EVS_ERR_BODY_EMPTY = createError<'EVS_ERR_BODY_EMPTY', 400, []>(
  'EVS_ERR_BODY_EMPTY', 'The request body holds no event: send a JSON object, a JSON array of objects, or NDJSON', 400)
export const EVS_ERR_BODY_INVALID_JSON = createError<'EVS_ERR_BODY_INVALID_JSON', 400, [string]>(
  'EVS_ERR_BODY_INVALID_JSON', 'Invalid JSON %s; nothing of this request was written', 400)
export const EVS_ERR_BODY_NOT_OBJECT = createError<'EVS_ERR_BODY_NOT_OBJECT', 400, [string, string]>(
  'EVS_ERR_BODY_NOT_OBJECT', 'Every event must be a JSON object, but %s is %s; nothing of this request was written', 400)
export const EVS_ERR_BODY_TOO_LARGE = createError<'EVS_ERR_BODY_TOO_LARGE', 413, [number]>(
  'EVS_ERR_BODY_TOO_LARGE', 'Request body is larger than the limit of %d bytes (server.bodyLimit, applied before and after gzip decoding)', 413)
export const EVS_ERR_BODY_GZIP_INVALID = createError<'EVS_ERR_BODY_GZIP_INVALID', 400, [string, string]>(
  'EVS_ERR_BODY_GZIP_INVALID', 'The body is declared %s-encoded but cannot be decoded: %s', 400)
export const EVS_ERR_BODY_ENCODING_UNSUPPORTED = createError<'EVS_ERR_BODY_ENCODING_UNSUPPORTED', 415, [string]>(
  'EVS_ERR_BODY_ENCODING_UNSUPPORTED', 'Unsupported Content-Encoding "%s": send identity, gzip or deflate', 415)
export const EVS_ERR_MEDIA_TYPE_UNSUPPORTED = createError<'EVS_ERR_MEDIA_TYPE_UNSUPPORTED', 415, [string]>(
  'EVS_ERR_MEDIA_TYPE_UNSUPPORTED',
  'Unsupported Content-Type "%s": send application/json, application/x-ndjson or text/plain', 415)
export const EVS_ERR_BODY_ABORTED = createError<'EVS_ERR_BODY_ABORTED', 400, []>(
  'EVS_ERR_BODY_ABORTED', 'The client closed the connection before the body was complete', 400)
export const EVS_ERR_BODY_TIMEOUT = createError<'EVS_ERR_BODY_TIMEOUT', 408, [number]>(
  'EVS_ERR_BODY_TIMEOUT', 'No byte of the body arrived for %d s (server.bodyIdleTimeoutS); nothing of this request was written', 408)
export const EVS_ERR_BODY_INTERRUPTED = createError<'EVS_ERR_BODY_INTERRUPTED', 503, []>(
  'EVS_ERR_BODY_INTERRUPTED', 'The server is reloading its settings or stopping, and the body was still arriving; nothing of this request was written; retry', 503)
export const EVS_ERR_BODY_INVALID_UTF8 = createError<'EVS_ERR_BODY_INVALID_UTF8', 400, []>(
  'EVS_ERR_BODY_INVALID_UTF8', 'The body is not valid UTF-8, as JSON must be; nothing of this request was written', 400)
export const EVS_ERR_REQUEST_MALFORMED = createError<'EVS_ERR_REQUEST_MALFORMED', 400, [string]>(
  'EVS_ERR_REQUEST_MALFORMED', 'The request is not valid HTTP/1.1 (%s); nothing of it was read', 400)
export const EVS_ERR_REQUEST_HEADERS_TOO_LARGE = createError<'EVS_ERR_REQUEST_HEADERS_TOO_LARGE', 431, []>(
  'EVS_ERR_REQUEST_HEADERS_TOO_LARGE', 'The request line and headers are larger than Node.js takes (--max-http-header-size, 16 KiB by default)', 431)
export const EVS_ERR_REQUEST_TIMEOUT = createError<'EVS_ERR_REQUEST_TIMEOUT', 408, []>(
  'EVS_ERR_REQUEST_TIMEOUT', 'The request did not arrive in time: its headers within server.headersTimeoutS, or all of it within server.requestTimeoutS; nothing of it was written', 408)
export const EVS_ERR_ROUTE_NOT_FOUND = createError<'EVS_ERR_ROUTE_NOT_FOUND', 404, [string]>(
  'EVS_ERR_ROUTE_NOT_FOUND', 'No route %s: events go to POST /events (or a path below it)', 404)
export const EVS_ERR_INTERNAL = createError<'EVS_ERR_INTERNAL', 500, []>(
  'EVS_ERR_INTERNAL', 'Internal error; see the server log', 500)

export const EVS_ERR_DESTINATION_UNAVAILABLE = createError<'EVS_ERR_DESTINATION_UNAVAILABLE', 503, [string, string]>(
  'EVS_ERR_DESTINATION_UNAVAILABLE', 'Destination "%s" could not store the events (%s); retry later', 503)
export const EVS_ERR_OVERLOADED = createError<'EVS_ERR_OVERLOADED', 503, [number, number]>(
  'EVS_ERR_OVERLOADED',
  'The server holds %d bytes of requests in memory, at its server.maxInFlightBytes limit of %d; retry later', 503)
export const EVS_ERR_STATS_AUTH = createError<'EVS_ERR_STATS_AUTH', 401, []>(
  'EVS_ERR_STATS_AUTH', 'Statistics require a stats key (requireAuthenticationForStats)', 401)
export const EVS_ERR_ADMIN_AUTH = createError<'EVS_ERR_ADMIN_AUTH', 401, []>(
  'EVS_ERR_ADMIN_AUTH', 'This endpoint requires one of security.adminAuthenticationKeys', 401)
export const EVS_ERR_ADMIN_DISABLED = createError<'EVS_ERR_ADMIN_DISABLED', 404, []>(
  'EVS_ERR_ADMIN_DISABLED', 'Admin endpoints are disabled: set security.adminAuthenticationKeys to enable them', 404)
export const EVS_ERR_RELOAD_REJECTED = createError<'EVS_ERR_RELOAD_REJECTED', 400, [string]>(
  'EVS_ERR_RELOAD_REJECTED', 'Reload rejected, the running settings are kept:\n%s', 400)

export const EVS_ERR_SPOOL_FULL = createError<'EVS_ERR_SPOOL_FULL', 503, [string, number, number]>(
  'EVS_ERR_SPOOL_FULL',
  'Destination "%s" has %d bytes waiting for upload, at its spoolMaxBytes limit of %d: its store is slow or down; retry later', 503)

export const EVS_ERR_CONNECTION_KEY_INVALID = createError<'EVS_ERR_CONNECTION_KEY_INVALID', 500, [string, string]>(
  'EVS_ERR_CONNECTION_KEY_INVALID', 'Connection "%s" refused key "%s": keys are relative, "/"-separated, without "." or ".." segments', 500)
export const EVS_ERR_CONNECTION_NOT_FOUND = createError<'EVS_ERR_CONNECTION_NOT_FOUND', 404, [string, string]>(
  'EVS_ERR_CONNECTION_NOT_FOUND', 'Connection "%s" has no object at key "%s"', 404)
export const EVS_ERR_CONNECTION_TIMEOUT = createError<'EVS_ERR_CONNECTION_TIMEOUT', 503, [string, string]>(
  'EVS_ERR_CONNECTION_TIMEOUT', 'Connection "%s" timed out: %s', 503)

export const EVS_ERR_PROBE_TIMEOUT = createError<'EVS_ERR_PROBE_TIMEOUT', 504, [string, number]>(
  'EVS_ERR_PROBE_TIMEOUT', 'Connection "%s" gave no answer to the probe within %d s', 504)
export const EVS_ERR_CLI_ARGUMENT = createError<'EVS_ERR_CLI_ARGUMENT', 500, [string]>(
  'EVS_ERR_CLI_ARGUMENT', '%s', 500)

export const EVS_ERR_QUERY_INVALID = createError<'EVS_ERR_QUERY_INVALID', 400, [string]>(
  'EVS_ERR_QUERY_INVALID', '%s', 400)
export const EVS_ERR_QUERY_DESTINATION = createError<'EVS_ERR_QUERY_DESTINATION', 400, [string]>(
  'EVS_ERR_QUERY_DESTINATION', '%s', 400)
export const EVS_ERR_QUERY_STORE = createError<'EVS_ERR_QUERY_STORE', 503, [string, string]>(
  'EVS_ERR_QUERY_STORE', 'Cannot list the files of destination "%s": %s', 503)

export const EVS_ERR_RECOVERY = createError<'EVS_ERR_RECOVERY', 500, [string, string]>(
  'EVS_ERR_RECOVERY', 'Recovery of destination "%s" failed: %s', 500)
