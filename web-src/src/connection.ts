/**
 * Whether the page is live: the subscriptions' states (`errored` while the manager reconnects)
 * and the manager's connection-loss errors, checked every second.
 */
import type { LiveSubscription } from './live.ts';

export type ConnectionState = 'connecting' | 'online' | 'offline';

export class ConnectionTracker {
  private readonly subscriptions = new Set<LiveSubscription>();
  private readonly listeners = new Set<(state: ConnectionState) => void>();
  /** Topics the server refused: they stay `errored`, which is not the connection's fault. */
  private readonly refused = new Set<string>();
  private lost = false;
  private browserOffline = typeof navigator !== 'undefined' && navigator.onLine === false;
  private timer: ReturnType<typeof setInterval> | undefined;
  private current: ConnectionState = 'connecting';

  constructor() {
    window.addEventListener('online', this.onBrowserOnline);
    window.addEventListener('offline', this.onBrowserOffline);
    this.timer = setInterval(() => this.update(), 1000);
  }

  get state(): ConnectionState {
    return this.current;
  }

  track(subscription: LiveSubscription): () => void {
    this.subscriptions.add(subscription);
    this.update();
    return () => {
      this.subscriptions.delete(subscription);
      this.update();
    };
  }

  /** The manager reported a lost connection: offline until every subscription is joined again. */
  connectionLost(): void {
    this.lost = true;
    this.update();
  }

  /** The server refused this topic (not a connection problem; it does not retry). */
  refusedTopic(topic: string): void {
    this.refused.add(topic.replace(/^realtime:/, ''));
    this.update();
  }

  listen(listener: (state: ConnectionState) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  dispose(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    window.removeEventListener('online', this.onBrowserOnline);
    window.removeEventListener('offline', this.onBrowserOffline);
    this.listeners.clear();
    this.subscriptions.clear();
  }

  private readonly onBrowserOnline = (): void => {
    this.browserOffline = false;
    this.update();
  };

  private readonly onBrowserOffline = (): void => {
    this.browserOffline = true;
    this.update();
  };

  private update(): void {
    const states = [...this.subscriptions].filter((s) => !this.refused.has(s.topic)).map((s) => s.state);
    const allJoined = states.length > 0 && states.every((s) => s === 'joined' || s === 'leaving' || s === 'closed');
    if (allJoined && !this.browserOffline) this.lost = false;
    let next: ConnectionState;
    if (this.browserOffline || this.lost || states.includes('errored')) next = 'offline';
    else if (states.includes('joining')) next = this.current === 'offline' ? 'offline' : 'connecting';
    else next = 'online';
    if (next !== this.current) {
      this.current = next;
      for (const listener of [...this.listeners]) listener(next);
    }
  }
}
