import type { Destination, RoutedEvent } from './destination.js'
import type { DestinationCommonSettings } from './schemas/settings.js'
import type { KeyRing } from './auth.js'

export { UNKNOWN_ROUTING_KEY, UNKNOWN_TOPIC } from './destination.js'

interface Route {
  readonly destination: Destination
  readonly topics: ReadonlySet<string> | undefined
  readonly routingKeys: ReadonlySet<string> | undefined
  /** Index in the events key ring, or -1 when any (or no) key is fine. */
  readonly requiredKey: number
}

/** Filters precomputed once per destination: routing an event is a few set look-ups. */
export class Router {
  readonly #routes: Route[]

  constructor (destinations: ReadonlyArray<{ settings: DestinationCommonSettings, destination: Destination }>, keys: KeyRing) {
    this.#routes = destinations.map(({ settings, destination }) => ({
      destination,
      topics: settings.topicsFiltering === 'SELECTED' ? new Set(settings.topics) : undefined,
      routingKeys: settings.routingKeysFiltering === 'SELECTED' ? new Set(settings.routingKeys) : undefined,
      requiredKey: settings.requiredAuthKey === undefined ? -1 : keys.match(settings.requiredAuthKey)
    }))
  }

  /**
   * Destinations taking an event of this topic and routing key, sent with the key of index
   * `keyIndex` (-1: no valid key).
   */
  matches (topic: string, routingKey: string, keyIndex: number): Destination[] {
    const out: Destination[] = []
    for (const route of this.#routes) {
      if (route.requiredKey !== -1 && route.requiredKey !== keyIndex) continue
      if (route.topics !== undefined && !route.topics.has(topic)) continue
      if (route.routingKeys !== undefined && !route.routingKeys.has(routingKey)) continue
      out.push(route.destination)
    }
    return out
  }
}

/** Groups routed events per destination, keeping each destination's events in request order. */
export class Dispatch {
  readonly batches = new Map<Destination, RoutedEvent[]>()
  count = 0

  add (destinations: readonly Destination[], event: RoutedEvent): void {
    for (const destination of destinations) {
      const batch = this.batches.get(destination)
      if (batch === undefined) this.batches.set(destination, [event])
      else batch.push(event)
    }
    if (destinations.length > 0) this.count++
  }
}
