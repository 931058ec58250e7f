/**
 * Typing indicators from keystrokes, within the server's rate limit (the Python SDK's
 * `TypingHelper`): a UI calls `keystroke()` on every key, the helper turns that into the few
 * requests the limit allows, one at a time so a stop never overtakes its start.
 */

import { ApiError, RealtimeError } from './errors.js'
import type { RealtimeMessagingManager } from './manager.js'

/**
 * The client's side of a moving-window limit such as "10 a minute". A use counts from when its
 * answer arrived: the server counted it before answering, so a request sent `windowMs` after
 * that cannot meet it in the server's window.
 */
export class RateBudget {
  private uses: number[] = []

  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {
    if (limit < 1 || windowMs <= 0) throw new RangeError('a rate budget needs a positive limit and window')
  }

  used(now: number): number {
    while (this.uses.length > 0 && (this.uses[0] ?? 0) + this.windowMs <= now) this.uses.shift()
    return this.uses.length
  }

  allows(now: number, cost = 1, reserve = 0): boolean {
    return this.limit - reserve - this.used(now) >= cost
  }

  /** When `allows` becomes true (Infinity if `cost + reserve` exceeds the limit). */
  freeAt(now: number, cost = 1, reserve = 0): number {
    const expiring = this.used(now) + cost + reserve - this.limit
    if (expiring <= 0) return now
    if (cost + reserve > this.limit) return Infinity
    return (this.uses[expiring - 1] ?? now) + this.windowMs
  }

  record(at: number, cost = 1): void {
    for (let i = 0; i < cost; i++) this.uses.push(at)
  }
}

export interface TypingHelperOptions {
  /** Milliseconds without a keystroke after which typing stops (default 3000). */
  idleAfterMs?: number
  /** How often a continuing indicator is refreshed, before the server expires it (4000). */
  refreshEveryMs?: number
  /** How long the server shows an indicator after a start (5000, the server's). */
  expiresAfterMs?: number
  /** The server's typing limit per participant and conversation (10 per 60000 ms). */
  rateLimit?: number
  rateWindowMs?: number
  /** Failed requests (default: console.warn); typing is never worth an exception. */
  onError?: (error: Error) => void
}

type Action = () => Promise<void>

export class TypingHelper {
  private readonly idleAfterMs: number
  private readonly refreshEveryMs: number
  private readonly expiresAfterMs: number
  private readonly budget: RateBudget
  private lastKey: number | null = null
  /** Until when the server may show us typing (null: it does not). */
  private liveUntil: number | null = null
  private nextStartAt = -Infinity
  private closing = false
  private running: Promise<void> | null = null
  private timer: ReturnType<typeof setTimeout> | null = null

  constructor(
    private readonly manager: RealtimeMessagingManager,
    readonly conversationId: string,
    private readonly options: TypingHelperOptions = {},
  ) {
    this.idleAfterMs = options.idleAfterMs ?? 3000
    this.refreshEveryMs = options.refreshEveryMs ?? 4000
    this.expiresAfterMs = options.expiresAfterMs ?? 5000
    const limit = options.rateLimit ?? 10
    if (limit < 2) throw new RangeError('rateLimit must allow a start and a stop')
    this.budget = new RateBudget(limit, options.rateWindowMs ?? 60_000)
  }

  /** Whether the server may be showing the indicator, as far as this helper knows. */
  get isTyping(): boolean {
    return this.liveUntil !== null && Date.now() < this.liveUntil
  }

  /** The user typed: cheap enough for every key. */
  keystroke(): void {
    if (this.closing) return
    this.lastKey = Date.now()
    this.kick()
  }

  /** The user stopped typing (the input lost focus, the message was sent): stop now. */
  stop(): void {
    this.lastKey = null
    if (this.liveUntil !== null) this.kick()
  }

  /** Stop the indicator if it is showing, and take no more keystrokes. */
  async close(): Promise<void> {
    this.closing = true
    this.kick()
    await this.running
  }

  private kick(): void {
    if (this.running !== null) return // the worker plans again after its request
    this.running = this.work().finally(() => {
      this.running = null
    })
  }

  private async work(): Promise<void> {
    for (;;) {
      if (this.timer !== null) clearTimeout(this.timer)
      this.timer = null
      const now = Date.now()
      const [action, wakeAt] = this.plan(now)
      if (action !== null) {
        await action()
        continue
      }
      if (wakeAt !== null) this.timer = setTimeout(() => this.kick(), Math.max(0, wakeAt - now))
      return
    }
  }

  /** What to send now, or when to look again (null: never). */
  private plan(now: number): [Action | null, number | null] {
    const live = this.liveUntil !== null && now < this.liveUntil
    if (!live) this.liveUntil = null
    const keyAt = this.lastKey
    if (!this.closing && keyAt !== null && now < keyAt + this.idleAfterMs) {
      let due = this.nextStartAt
      if (now >= due) {
        // One request stays in reserve for the stop.
        if (this.budget.allows(now, 1, 1)) return [() => this.start(), null]
        due = this.budget.freeAt(now, 1, 1)
      }
      return [null, Math.min(due, keyAt + this.idleAfterMs)]
    }
    this.lastKey = null
    if (live && this.budget.allows(now)) return [() => this.send(false), null]
    this.liveUntil = null // not live, or unaffordable: it expires by itself within seconds
    return [null, null]
  }

  private async start(): Promise<void> {
    this.nextStartAt = Date.now() + this.refreshEveryMs
    try {
      await this.manager.sendTypingIndicator(this.conversationId, null, null, true)
      this.liveUntil = Date.now() + this.expiresAfterMs
    } catch (error) {
      // A refusal changed nothing on the server; anything else may have landed.
      if (!(error instanceof ApiError && error.status !== 0)) {
        this.liveUntil = Date.now() + this.expiresAfterMs
      }
      this.report(error)
    } finally {
      this.budget.record(Date.now())
    }
  }

  private async send(isTyping: boolean): Promise<void> {
    this.liveUntil = null
    this.nextStartAt = -Infinity
    try {
      await this.manager.sendTypingIndicator(this.conversationId, null, null, isTyping)
    } catch (error) {
      this.report(error) // not retried: the indicator expires by itself
    } finally {
      this.budget.record(Date.now())
    }
  }

  private report(error: unknown): void {
    const failure = error instanceof Error ? error : new RealtimeError(String(error))
    if (this.options.onError) this.options.onError(failure)
    else console.warn('realtime-messaging: typing:', failure)
  }
}
