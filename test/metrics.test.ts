import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Histogram, Registry } from 'prom-client'
import { TallyHistogram } from '../core/metrics.js'

describe('TallyHistogram', () => {
  it('exposes the same series as a prom-client Histogram fed the same observations', async () => {
    const bounds = [0.001, 0.01, 0.1, 1]
    await fc.assert(fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom('a', 'b'), fc.constantFrom(0, 0.001, 0.0011, 0.01, 0.5, 1, 2, 100)), { maxLength: 30 }), async (observations) => {
      const ours = new Registry()
      const theirs = new Registry()
      const tally = new TallyHistogram('x_seconds', 'help', 'outcome', bounds, ours)
      const histogram = new Histogram({ name: 'x_seconds', help: 'help', labelNames: ['outcome'], buckets: bounds, registers: [theirs] })
      for (const [label, value] of observations) {
        tally.observe(label, value)
        histogram.observe({ outcome: label }, value)
      }
      const sorted = (text: string): string[] => text.split('\n').sort()
      expect(sorted(await ours.metrics())).toEqual(sorted(await theirs.metrics()))
    }), { numRuns: 100 })
  })
})
