import { describe, expect, it } from 'vitest'

// The benchmark's loss check and charts (bench/*.mjs): plain JavaScript, loaded untyped.
interface Totals { lines: number, unknown: number, files: number }
interface Ledger { add(idBase: number, tid: number, events: number): void, tally(): { distinct: number, duplicated: number, missing: number } }
const verifyPath = '../bench/verify.mjs'
const svgPath = '../bench/svg.mjs'
const { IdLedger, RUN_STRIDE, scanLines, folderSizes, scanFolder } = await import(verifyPath) as {
  IdLedger: new () => Ledger
  RUN_STRIDE: number
  scanLines(data: Buffer, ledger: Ledger | undefined, totals: Totals): void
  folderSizes(dir: string): Promise<Map<string, number>>
  scanFolder(dir: string, ledger: Ledger | undefined, since?: Map<string, number>): Promise<Totals>
}
const { lineChart } = await import(svgPath) as { lineChart(spec: unknown): string }

const line = (id: number | string): string => `{"clientEvent":{"msgType":"x","seq":${id}},"serverTimestamp":"t"}\n`

describe('benchmark loss check', () => {
  it('counts lines and finds ids written twice, missing, or never sent', () => {
    const ledger = new IdLedger()
    ledger.add(0, 0, 3) // run 0, thread 0: ids 0, 1, 2
    ledger.add(RUN_STRIDE, 1, 2) // run 1, thread 1: ids 1e10 + 1e9 + 0, 1
    const totals = { lines: 0, unknown: 0, files: 0 }
    const thread1 = RUN_STRIDE + 1e9
    scanLines(Buffer.from(line(0) + line(2) + line(2) + line(thread1) + line(thread1 + 1) + line(7) + line('"nope"')), ledger, totals)
    expect(totals).toEqual({ lines: 7, unknown: 2, files: 0 })
    expect(ledger.tally()).toEqual({ distinct: 4, duplicated: 1, missing: 1 })
  })

  it('counts lines without ids when no ledger is given, including a last line without a newline', () => {
    const totals = { lines: 0, unknown: 0, files: 0 }
    scanLines(Buffer.from('{"a":1}\n\n{"a":2}'), undefined, totals)
    expect(totals.lines).toBe(2)
  })
})

describe('benchmark loss check against a server that is not ours (--target)', () => {
  it('counts only what was appended since a scenario started: the target writes every scenario into one folder', async () => {
    const { mkdtemp, writeFile, appendFile, mkdir, rm } = await import('node:fs/promises')
    const { join } = await import('node:path')
    const { tmpdir } = await import('node:os')
    const dir = await mkdtemp(join(tmpdir(), 'evs-bench-tools-'))
    try {
      await mkdir(join(dir, 'a'))
      // The previous scenario used the same ids (each scenario's ledger starts at run 0).
      await writeFile(join(dir, 'a', 'one.jsonl'), line(0) + line(1))
      const since = await folderSizes(dir)
      await appendFile(join(dir, 'a', 'one.jsonl'), line(0))
      await writeFile(join(dir, 'a', 'two.jsonl'), line(1))
      const ledger = new IdLedger()
      ledger.add(0, 0, 2)
      expect(await scanFolder(dir, ledger, since)).toEqual({ lines: 2, unknown: 0, files: 2 })
      expect(ledger.tally()).toEqual({ distinct: 2, duplicated: 0, missing: 0 })
      expect((await scanFolder(dir, undefined)).lines).toBe(4)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('benchmark charts', () => {
  it('draws one path per series and labels every point', () => {
    const svg = lineChart({
      title: 'Connections',
      xLabel: 'connections',
      categories: [1, 10, 1000],
      panels: [
        { title: 'throughput', yLabel: 'events/s', series: [{ name: 'server', values: [900, 20000, 31000] }, { name: 'bare', values: [1000, 40000, 41000], dashed: true }] },
        { title: 'p99', yLabel: 'ms', log: true, series: [{ name: 'server', values: [0.4, 2.5, 139] }, { name: 'bare', values: [0.3, 1.5, 80] }] }
      ]
    })
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true)
    expect(svg.match(/<path /g)).toHaveLength(4)
    expect(svg.match(/<circle /g)).toHaveLength(12)
    for (const label of ['31k', '139', '0.40', '1,000', 'server', 'bare']) expect(svg).toContain(`>${label}<`)
  })
})
