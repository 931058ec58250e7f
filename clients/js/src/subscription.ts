/** What `subscribeTo…` returns: one set of handlers on a topic. */

import { RealtimeError } from './errors.js'
import type {
  ConversationEvent,
  DeliveryStatusEvent,
  MessageEvent,
  PresenceEvent,
  ReadReceiptEvent,
  RealtimeEvent,
  RejoinEvent,
  TypingIndicatorEvent,
} from './events.js'
import type { Listener, SubscriptionState, Topic } from './topic.js'

type Handler<T> = (event: T) => void | Promise<void>

/** The documented handlers; each may be async (the next event waits for it). */
export interface SubscriptionHandlers {
  onMessage?: Handler<MessageEvent>
  onReadReceipt?: Handler<ReadReceiptEvent>
  onTyping?: Handler<TypingIndicatorEvent>
  onDeliveryStatus?: Handler<DeliveryStatusEvent>
  onPresence?: Handler<PresenceEvent>
  /**
   * A conversation created, changed (status, assignee, subject) or deleted, by anyone: on the
   * staff and customer messages topics only (not `conversation:<id>`).
   */
  onConversation?: Handler<ConversationEvent>
  /**
   * The subscription joined again after a reconnect (not on the first join), once per rejoin,
   * after the changes replayed: `complete` false means some changes were lost (older than the
   * server's retention), so reload what the UI shows.
   */
  onRejoin?: Handler<RejoinEvent>
  /**
   * Connection losses (the client reconnects by itself), refusals, channel errors, lost
   * history, and what the other handlers throw. Without it the manager's `onError` gets them.
   */
  onError?: Handler<Error>
}

/** Where errors go when a subscription has no onError of its own. */
export type ErrorSink = (error: Error) => void

export class Subscription {
  /** The topic without the `realtime:` prefix, e.g. `conversation:<id>`. */
  readonly topic: string
  private closed = false
  /** Handlers run one event at a time, in order, even when they are async. */
  private queue: Promise<void> = Promise.resolve()
  private readonly listener: Listener

  constructor(
    private readonly owner: Topic,
    private readonly handlers: SubscriptionHandlers,
    private readonly fallback: ErrorSink,
    private readonly release: (subscription: Subscription, listener: Listener) => Promise<void>,
  ) {
    this.topic = owner.name
    this.listener = {
      deliver: (event) => this.enqueue(() => this.handle(event)),
      fail: (error) => this.enqueue(() => this.handleError(error)),
      rejoined: (event) => this.enqueue(() => this.handleRejoin(event)),
      close: () => {
        this.closed = true
      },
    }
    owner.listeners.add(this.listener)
  }

  /** `joining`, `joined`, `errored` (refused, or reconnecting), `leaving` or `closed`. */
  get state(): SubscriptionState {
    return this.closed ? 'closed' : this.owner.state
  }

  /**
   * Resolves once changes flow (the server confirmed the PostgreSQL subscription); rejects
   * when the join is refused or the subscription ends first. Awaiting it is optional.
   */
  get ready(): Promise<void> {
    return this.owner.ready
  }

  /** The last change position the topic received: where it resumes after a reconnect. */
  get lastPosition(): number | null {
    return this.owner.lastPosition
  }

  /** Stop the handlers; the channel is left when no other subscription shares it. */
  async unsubscribe(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.release(this, this.listener)
  }

  private enqueue(task: () => Promise<void>): void {
    if (this.closed) return
    this.queue = this.queue.then(task)
  }

  private async handle(item: RealtimeEvent): Promise<void> {
    if (this.closed) return
    try {
      switch (item.kind) {
        case 'message':
          await this.handlers.onMessage?.(item.event)
          break
        case 'readReceipt':
          await this.handlers.onReadReceipt?.(item.event)
          break
        case 'typing':
          await this.handlers.onTyping?.(item.event)
          break
        case 'deliveryStatus':
          await this.handlers.onDeliveryStatus?.(item.event)
          break
        case 'presence':
          await this.handlers.onPresence?.(item.event)
          break
        case 'conversation':
          await this.handlers.onConversation?.(item.event)
          break
      }
    } catch (error) {
      await this.handleError(error instanceof Error ? error : new RealtimeError(String(error)))
    }
  }

  private async handleRejoin(event: RejoinEvent): Promise<void> {
    if (this.closed) return
    try {
      await this.handlers.onRejoin?.(event)
    } catch (error) {
      await this.handleError(error instanceof Error ? error : new RealtimeError(String(error)))
    }
  }

  private async handleError(error: Error): Promise<void> {
    const onError = this.handlers.onError
    if (onError === undefined) {
      this.fallback(error)
      return
    }
    try {
      await onError(error)
    } catch (failure) {
      this.fallback(failure instanceof Error ? failure : new RealtimeError(String(failure)))
    }
  }
}
