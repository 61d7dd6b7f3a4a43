import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Histogram, Registry } from 'prom-client'
import type { Destination } from '../core/destination.js'
import { Metrics, TallyHistogram } from '../core/metrics.js'

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

describe('metrics a destination type declares', () => {
  it('are labelled with the destination, shared by name, and a gauge follows the destination of its name', async () => {
    const current: Array<{ name: string }> = [{ name: 'a' }, { name: 'b' }]
    const metrics = new Metrics(() => 0, () => current as unknown as Destination[])
    const a = metrics.forDestination('a')
    const b = metrics.forDestination('b')
    a.counter('evs_things_total', 'Things').add()
    b.counter('evs_things_total', 'Things').add(2)
    a.histogram('evs_try_seconds', 'Tries', [1], 'outcome').observe(0.5, 'ok')
    a.gauge('evs_level', 'Level', () => 1)
    b.gauge('evs_level', 'Level', () => 2)
    let text = await metrics.registry.metrics()
    expect(text).toContain('evs_things_total{destination="a"} 1')
    expect(text).toContain('evs_things_total{destination="b"} 2')
    expect(text).toContain('evs_try_seconds_bucket{le="1",destination="a",outcome="ok"} 1')
    expect(text).toContain('evs_level{destination="a"} 1')
    // A reload: "a" is created again and declares nothing yet; "b" is gone from settings.
    const a2 = metrics.forDestination('a')
    current.splice(1, 1)
    text = await metrics.registry.metrics()
    expect(text).not.toContain('evs_level{')
    a2.gauge('evs_level', 'Level', () => 3)
    a2.counter('evs_things_total', 'Things').add()
    text = await metrics.registry.metrics()
    expect(text).toContain('evs_level{destination="a"} 3')
    expect(text).toContain('evs_things_total{destination="a"} 2')
  })

  it('refuses a name declared with another kind or help, one the server uses, or a malformed one', () => {
    const metrics = new Metrics(() => 0, () => [])
    const d = metrics.forDestination('d')
    d.counter('evs_things_total', 'Things')
    expect(() => d.gauge('evs_things_total', 'Things', () => 1)).toThrow(expect.objectContaining({ code: 'EVS_ERR_METRIC_CONFLICT' }))
    expect(() => d.counter('evs_things_total', 'Other things')).toThrow(expect.objectContaining({ code: 'EVS_ERR_METRIC_CONFLICT' }))
    expect(() => d.counter('evs_events_received_total', 'Mine')).toThrow(expect.objectContaining({ code: 'EVS_ERR_METRIC_CONFLICT' }))
    expect(() => d.counter('my-metric', 'Mine')).toThrow(expect.objectContaining({ code: 'EVS_ERR_METRIC_CONFLICT' }))
  })
})
