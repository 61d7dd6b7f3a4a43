// Line charts as hand-written SVG: one file, panels side by side sharing the x axis (evenly spaced
// categories, e.g. 1, 10, 50, 200, 1000 connections), one line per series, each point labelled.

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e']

/** A short label: 1.2k, 35k, 1.4M, 0.42, 7.5, 139. */
export function shortNumber (v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–'
  if (v === 0) return '0'
  const a = Math.abs(v)
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`
  if (a >= 1e4) return `${Math.round(v / 1e3)}k`
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`
  if (a >= 10) return String(Math.round(v))
  if (a >= 1) return v.toFixed(1)
  return v.toFixed(2)
}

function niceMax (max) {
  if (!(max > 0)) return 1
  const step = 10 ** Math.floor(Math.log10(max))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * step >= max) return m * step
  return 10 * step
}

function panel ({ x0, y0, width, height, title, yLabel, log, categories, series }) {
  const values = series.flatMap((s) => s.values).filter((v) => typeof v === 'number' && v > 0)
  let scale
  let ticks
  if (log) {
    const lo = 10 ** Math.floor(Math.log10(Math.min(...values, 1)))
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...values, 1) * 1.0001))
    scale = (v) => y0 + height - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * height
    ticks = []
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t)
  } else {
    const hi = niceMax(Math.max(...values, 0) * 1.08)
    scale = (v) => y0 + height - (v / hi) * height
    ticks = Array.from({ length: 6 }, (_, i) => (hi * i) / 5)
  }
  // Inset from the axes, so that a point's label does not run into the tick labels.
  const inset = 24
  const xAt = (i) => x0 + (categories.length === 1 ? width / 2 : inset + (i * (width - 2 * inset)) / (categories.length - 1))
  const out = []
  out.push(`<text x="${x0 + width / 2}" y="${y0 - 14}" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`)
  for (const t of ticks) {
    const y = scale(t).toFixed(1)
    out.push(`<line x1="${x0}" y1="${y}" x2="${x0 + width}" y2="${y}" stroke="#ddd"/>`)
    out.push(`<text x="${x0 - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11" fill="#555">${esc(shortNumber(t))}</text>`)
  }
  out.push(`<line x1="${x0}" y1="${y0 + height}" x2="${x0 + width}" y2="${y0 + height}" stroke="#888"/>`)
  out.push(`<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y0 + height}" stroke="#888"/>`)
  categories.forEach((c, i) => {
    out.push(`<text x="${xAt(i).toFixed(1)}" y="${y0 + height + 16}" text-anchor="middle" font-size="11" fill="#555">${esc(typeof c === 'number' ? c.toLocaleString('en-US') : c)}</text>`)
  })
  out.push(`<text transform="translate(${x0 - 46},${y0 + height / 2}) rotate(-90)" text-anchor="middle" font-size="12" fill="#333">${esc(yLabel)}${log ? ' (log scale)' : ''}</text>`)
  series.forEach((s, si) => {
    const color = s.color ?? COLORS[si % COLORS.length]
    const points = s.values.map((v, i) => (typeof v === 'number' && v > 0 ? [xAt(i), scale(v), v] : undefined))
    const path = points.filter(Boolean).map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`).join(' ')
    if (path !== '') out.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
    for (const p of points) {
      if (p === undefined) continue
      out.push(`<circle cx="${p[0].toFixed(1)}" cy="${p[1].toFixed(1)}" r="3.5" fill="${color}"/>`)
      // The first series is labelled above its points, the others below, so close values stay readable.
      out.push(`<text x="${p[0].toFixed(1)}" y="${(si === 0 ? p[1] - 8 : p[1] + 15).toFixed(1)}" text-anchor="middle" font-size="10" fill="${color}">${esc(shortNumber(p[2]))}</text>`)
    }
  })
  return out.join('\n')
}

/**
 * An SVG document: `panels` side by side ({ title, yLabel, log?, series: [{ name, values, color?,
 * dashed? }] }), over the same `categories` named by `xLabel`; the legend comes from the first panel.
 */
export function lineChart ({ title, subtitle, xLabel, categories, panels }) {
  const panelWidth = 360
  const panelHeight = 230
  const left = 70
  const gap = 90
  const top = 100
  const width = left + panels.length * panelWidth + (panels.length - 1) * gap + 30
  const height = top + panelHeight + 56
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`]
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`)
  out.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`)
  if (subtitle) out.push(`<text x="${width / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">${esc(subtitle)}</text>`)
  let lx = left
  ;(panels[0]?.series ?? []).forEach((s, si) => {
    const color = s.color ?? COLORS[si % COLORS.length]
    out.push(`<line x1="${lx}" y1="56" x2="${lx + 22}" y2="56" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
    out.push(`<text x="${lx + 28}" y="56" dominant-baseline="middle" font-size="12">${esc(s.name)}</text>`)
    lx += 40 + s.name.length * 6.5
  })
  panels.forEach((p, i) => {
    const x0 = left + i * (panelWidth + gap)
    out.push(panel({ ...p, x0, y0: top, width: panelWidth, height: panelHeight, categories }))
    out.push(`<text x="${x0 + panelWidth / 2}" y="${top + panelHeight + 40}" text-anchor="middle" font-size="12" fill="#333">${esc(xLabel)}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}
