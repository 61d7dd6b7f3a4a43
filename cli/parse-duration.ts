/** `30s`, `2m`, `500ms`, `1h`, or plain seconds. */
export function parseDuration (text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (match === null) return undefined
  const value = Number(match[1])
  const unit = match[2] ?? 's'
  return value * (unit === 'ms' ? 0.001 : unit === 's' ? 1 : unit === 'm' ? 60 : 3600)
}
