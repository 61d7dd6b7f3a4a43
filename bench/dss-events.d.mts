export interface DssEvent {
  topic: string
  routingKey: string
  /** Reception time, milliseconds since the epoch. */
  at: number
  /** The event's JSON, as a node sends it. */
  text: string
}
export function dssEvents (count: number, seed?: number, startMs?: number): DssEvent[]
export function serverTimestamp (ms: number): string
export function jsonLine (e: DssEvent, address?: string): string
