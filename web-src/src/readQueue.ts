/**
 * Marks messages read as they come on screen, in batches (`markMessagesAsRead`, one request per
 * batch), within the read-receipt limit (60 a minute, each message counts), only while the page
 * is visible, and once per message.
 */
import { retryAfterOf, statusOf } from './api.ts';
import { Budget } from './budget.ts';
import type { LiveManager } from './live.ts';

const FLUSH_AFTER_MS = 400;
const MAX_BATCH = 50;

export class ReadQueue {
  private readonly pending = new Set<string>();
  private readonly solo = new Set<string>(); // ids of a refused batch, retried one by one
  private readonly done = new Set<string>();
  private readonly budget = new Budget(60, 60_000);
  private timer: ReturnType<typeof setTimeout> | undefined;
  private flushing = false;
  private disposed = false;

  /** Called after each batch is marked (the page refreshes its unread counts). */
  onMarked: ((ids: string[]) => void) | null = null;

  constructor(
    private readonly manager: LiveManager,
    private readonly onAuthFailure: (error: unknown) => void,
  ) {
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Whether this page has already marked (or is marking) the message. */
  has(id: string): boolean {
    return this.done.has(id) || this.pending.has(id) || this.solo.has(id);
  }

  add(id: string): void {
    if (this.disposed || this.has(id)) return;
    this.pending.add(id);
    this.schedule(FLUSH_AFTER_MS);
  }

  /** Messages known to be read already (their receipt exists): never sent. */
  known(ids: Iterable<string>): void {
    for (const id of ids) this.done.add(id);
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  private readonly onVisibility = (): void => {
    if (document.visibilityState === 'visible' && (this.pending.size > 0 || this.solo.size > 0)) {
      this.schedule(FLUSH_AFTER_MS);
    }
  };

  private schedule(ms: number): void {
    if (this.timer !== undefined || this.disposed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async flush(): Promise<void> {
    if (this.flushing || this.disposed) return;
    if (document.visibilityState !== 'visible') return; // resumed by visibilitychange
    const fromSolo = this.solo.size > 0;
    const source = fromSolo ? this.solo : this.pending;
    if (source.size === 0) return;
    const room = this.budget.available();
    if (room <= 0) {
      this.schedule(this.budget.waitMs());
      return;
    }
    const ids = [...source].slice(0, fromSolo ? 1 : Math.min(MAX_BATCH, room));
    for (const id of ids) source.delete(id);
    this.flushing = true;
    try {
      this.budget.spend(ids.length);
      await this.manager.markMessagesAsRead(ids);
      for (const id of ids) this.done.add(id);
      this.onMarked?.(ids);
    } catch (error) {
      const status = statusOf(error);
      if (status === 401) {
        this.onAuthFailure(error);
        return;
      }
      if (status === 429 || status === 503 || status === 409 || status === 0 || status === undefined) {
        for (const id of ids) source.add(id); // try again later
        const wait = retryAfterOf(error);
        if (status === 429) this.budget.exhaust(wait ?? 10);
        this.schedule(Math.max(1000, (wait ?? 3) * 1000));
      } else if (ids.length > 1) {
        for (const id of ids) this.solo.add(id); // all or nothing: find the one refused
      } else {
        for (const id of ids) this.done.add(id); // refused alone (deleted?): give up on it
      }
    } finally {
      this.flushing = false;
    }
    if (this.pending.size > 0 || this.solo.size > 0) this.schedule(FLUSH_AFTER_MS);
  }
}
