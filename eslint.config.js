import neostandard from 'neostandard'

// The style of the Fastify ecosystem (neostandard, with its TypeScript rules); `npm test` runs it.
export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bench/results/**']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (Fastify's reply methods return one).
      'no-void': ['error', { allowAsStatement: true }],
      // Settings take `${ENV}` references: strings that show that syntax are meant literally.
      'no-template-curly-in-string': 'off',
      // Loops on a flag that another task (a timer, a request) clears: the rule cannot see that.
      'no-unmodified-loop-condition': 'off'
    }
  }
]
