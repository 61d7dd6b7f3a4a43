// The request target as the server reads it. Some proxies send the absolute form
// (`http://user:password@host:port/events/…`): only its path is ever routed, logged or echoed.

/** The path of a request target, also in absolute form (`http://host:port/events/…`, sent by some proxies). */
export function pathOf (url: string): string {
  let start = 0
  if (url.charCodeAt(0) !== 47) { // not "/": absolute form
    const scheme = url.indexOf('://')
    start = scheme === -1 ? url.length : url.indexOf('/', scheme + 3)
    if (start === -1) start = url.length
  }
  let end = url.indexOf('?', start)
  if (end === -1) end = url.length
  return url.slice(start, end)
}
