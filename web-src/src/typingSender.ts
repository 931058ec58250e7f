/**
 * Reports the user's typing for one conversation: starts on the first keystroke, refreshes while
 * keys keep coming (the server expires an indicator after 5 s), stops after 3 s without a key
 * and on blur. Sending a message needs no stop: the server ends the indicator with the message.
 * Within the typing limit (10 a minute per conversation), keeping one for the stop.
 */
import { Budget } from './budget.ts';
import type { LiveManager } from './live.ts';

const IDLE_MS = 3000;
const REFRESH_MS = 4000;
const EXPIRES_MS = 5000;

export class TypingSender {
  private active = false;
  private lastSent = 0;
  private idle: ReturnType<typeof setTimeout> | undefined;
  private readonly budget = new Budget(10, 60_000);

  constructor(
    private readonly manager: LiveManager,
    private readonly conversationId: string,
    private readonly userId: string | undefined,
    private readonly customerId: string | undefined,
  ) {}

  keystroke(): void {
    const now = Date.now();
    if (this.idle !== undefined) clearTimeout(this.idle);
    this.idle = setTimeout(() => this.stop(), IDLE_MS);
    const due = !this.active || now - this.lastSent >= REFRESH_MS;
    if (due && this.budget.available(now) > 1) this.send(true, now);
  }

  /** Idle, blur, leaving the conversation. */
  stop(): void {
    if (this.idle !== undefined) clearTimeout(this.idle);
    this.idle = undefined;
    if (!this.active) return;
    this.active = false;
    const now = Date.now();
    // An indicator older than its expiry is gone already.
    if (now - this.lastSent < EXPIRES_MS && this.budget.available(now) > 0) this.send(false, now);
  }

  /** A message was sent: the server has ended the indicator. */
  sent(): void {
    if (this.idle !== undefined) clearTimeout(this.idle);
    this.idle = undefined;
    this.active = false;
  }

  private send(isTyping: boolean, now: number): void {
    this.budget.spend(1, now);
    if (isTyping) {
      this.active = true;
      this.lastSent = now;
    }
    this.manager.sendTypingIndicator(this.conversationId, this.userId, this.customerId, isTyping).catch((error) => {
      // Typing is best effort: a refusal (rate limit, offline) only loses the indicator.
      console.debug('typing indicator not sent', error);
    });
  }
}
