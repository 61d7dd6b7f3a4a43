export class Deferred<T = void> {
  readonly promise: Promise<T>
  resolve!: (value: T) => void
  reject!: (reason: unknown) => void

  constructor () {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    // A batch nobody awaits (e.g. only flushed) must not crash the process on failure.
    this.promise.catch(() => {})
  }
}
