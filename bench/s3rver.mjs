// s3rver (an S3 protocol server) for scenario (f), as its own process.
import S3rver from 's3rver'

const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[2], configureBuckets: [{ name: 'bench' }] })
const { port } = await server.run()
process.stdout.write(`listening http://127.0.0.1:${port}\n`)
process.on('SIGTERM', () => { server.close().then(() => process.exit(0)) })
