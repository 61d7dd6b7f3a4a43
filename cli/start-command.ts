import type { FastifyInstance } from 'fastify'
import { buildServer } from '../index.js'

function installSignalHandlers (app: FastifyInstance, timeoutS: number): void {
  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting without waiting')
      process.exit(1)
    }
    stopping = true
    app.log.info({ signal }, 'stopping: no new connections; finishing requests, flushing and closing files')
    const timer = setTimeout(() => {
      app.log.error({ timeoutS }, 'shutdown took longer than server.shutdownTimeoutS; exiting')
      process.exit(1)
    }, timeoutS * 1000)
    app.close().then(() => {
      clearTimeout(timer)
      app.log.info('stopped cleanly')
      process.exit(0)
    }, (err: unknown) => {
      app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGHUP', () => {
    app.log.info('SIGHUP: reloading settings')
    // A rejected reload is logged with its reasons and keeps the running settings.
    app.eventServer.reload().catch(() => {})
  })
}

/** `dss-event-server start`: resolves once listening; the process then runs until a signal stops it. */
export async function startCommand (config: string | undefined, host: string | undefined, port: string | undefined, pretty: boolean): Promise<number> {
  const app = await buildServer({
    ...(config !== undefined ? { settingsFile: config } : { document: {}, baseDir: process.cwd() }),
    overrides: { ...(host !== undefined ? { host } : {}), ...(port !== undefined ? { port } : {}) },
    pretty
  })
  const { server, security } = app.eventServer.settings
  installSignalHandlers(app, server.shutdownTimeoutS)
  await app.listen({ host: server.host, port: server.port })
  const destinations = [...app.eventServer.destinations.keys()]
  app.log.info({ settings: config ?? 'built-in defaults', instanceId: app.eventServer.instanceId, destinations }, 'dss-event-server is ready')
  if (!security.requireAuthenticationForEvents && server.host !== '127.0.0.1' && server.host !== 'localhost' && server.host !== '::1') {
    app.log.warn('events are accepted without authentication on a non-loopback address: set security.requireAuthenticationForEvents')
  }
  return 0
}
