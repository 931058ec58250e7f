/**
 * One set of handlers for every subscription of a page, fanned out to whoever listens (the
 * list, the open conversation). A page may hear the same event twice (the staff topic and the
 * conversation's topic both carry a message): listeners are idempotent.
 */
import type { LiveHandlers } from './live.ts';

type Key = keyof LiveHandlers;

export class Hub {
  private readonly listeners = new Set<LiveHandlers>();

  /** The handlers to give the manager. */
  readonly handlers: Required<LiveHandlers> = {
    onMessage: (event) => this.emit('onMessage', event),
    onReadReceipt: (event) => this.emit('onReadReceipt', event),
    onTyping: (event) => this.emit('onTyping', event),
    onDeliveryStatus: (event) => this.emit('onDeliveryStatus', event),
    onPresence: (event) => this.emit('onPresence', event),
    onConversation: (event) => this.emit('onConversation', event),
    onError: (error) => this.emit('onError', error),
  };

  listen(handlers: LiveHandlers): () => void {
    this.listeners.add(handlers);
    return () => {
      this.listeners.delete(handlers);
    };
  }

  private emit<K extends Key>(key: K, event: Parameters<NonNullable<LiveHandlers[K]>>[0]): void {
    for (const listener of [...this.listeners]) {
      const handler = listener[key] as ((value: typeof event) => void) | undefined;
      if (!handler) continue;
      try {
        handler(event);
      } catch (error) {
        console.error('realtime handler failed', error);
      }
    }
  }
}
