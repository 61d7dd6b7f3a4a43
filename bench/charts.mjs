// The sweeps' charts, from a run's results (bench/results/latest.json has them under `sweeps`).
import { lineChart } from './svg.mjs'

/** SVG files by name: one chart per sweep run, names prefixed with `prefix`. */
export function sweepCharts (sweeps, prefix, subtitle) {
  const files = {}
  if (sweeps.connections) {
    const { points, mainLabel } = sweeps.connections
    const series = (key) => [
      { name: mainLabel === 'target' ? 'target' : 'dss-event-server (fsync)', values: points.map((p) => p[mainLabel][key]) },
      { name: 'bare Fastify (body read, no parse)', values: points.map((p) => p.bare[key]), dashed: true }
    ]
    files[`${prefix}sweep-connections.svg`] = lineChart({
      title: 'Connections: single events, 1 event per request',
      subtitle,
      xLabel: 'concurrent connections',
      categories: points.map((p) => p.connections),
      panels: [
        { title: 'throughput', yLabel: 'events/s', series: series('eventsPerS') },
        { title: 'p99 latency', yLabel: 'ms', log: true, series: series('p99Ms') }
      ]
    })
  }
  if (sweeps.routingKeys) {
    const { points, mainLabel } = sweeps.routingKeys
    const series = (key) => [{ name: mainLabel === 'target' ? 'target' : 'dss-event-server (fsync, commit log, 256 descriptors)', values: points.map((p) => p[mainLabel][key]) }]
    files[`${prefix}sweep-routing-keys.svg`] = lineChart({
      title: 'Routing keys: single events spread over N partitions, 50 connections',
      subtitle,
      xLabel: 'routing keys (one partition each)',
      categories: points.map((p) => p.routingKeys),
      panels: [
        { title: 'throughput', yLabel: 'events/s', series: series('eventsPerS') },
        { title: 'p99 latency', yLabel: 'ms', log: true, series: series('p99Ms') }
      ]
    })
  }
  return files
}
