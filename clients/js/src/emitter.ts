type Listener<T> = (event: T) => void;

/** A minimal typed event emitter. A throwing listener does not disturb the others. */
export class Emitter<E> {
  private listeners: { [K in keyof E]?: Listener<E[K]>[] } = {};

  /** Adds a listener; returns `this` so calls chain. */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): this {
    (this.listeners[event] ||= []).push(fn);
    return this;
  }

  off<K extends keyof E>(event: K, fn: Listener<E[K]>): this {
    const list = this.listeners[event];
    if (list) this.listeners[event] = list.filter((f) => f !== fn);
    return this;
  }

  /** @internal */
  _emit<K extends keyof E>(event: K, value: E[K]): void {
    for (const fn of this.listeners[event] || []) {
      try {
        fn(value);
      } catch (e) {
        // Report it like an uncaught error, without breaking the client's state.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
