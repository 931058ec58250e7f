/**
 * One topic on the socket: its realtime-js channel, the resume position, the events it
 * produces and the subscriptions that listen to it (several may share one channel: a server
 * keeps one channel per topic and socket).
 */

import {
  REALTIME_SUBSCRIBE_STATES,
  type RealtimeChannel,
  type RealtimeChannelOptions,
  type RealtimeClient,
} from '@supabase/realtime-js'
import {
  ChannelClosedError,
  ChannelError,
  ConnectionLostError,
  HistoryLostError,
  JoinRefusedError,
  RealtimeError,
} from './errors.js'
import {
  eventFromChange,
  parseTimestamp,
  participantOf,
  type ChangeData,
  type PresenceEvent,
  type RealtimeEvent,
  type RejoinEvent,
  type TypingIndicatorEvent,
} from './events.js'
import { PresenceView } from './presence.js'

export type SubscriptionState = 'joining' | 'joined' | 'errored' | 'leaving' | 'closed'

export interface Binding {
  event: '*' | 'INSERT' | 'UPDATE' | 'DELETE'
  schema: 'public'
  table: string
  filter?: string
}

/** A frame as the socket decoded it (vsn 1.0.0: a JSON object). */
export interface Frame {
  topic?: unknown
  event?: unknown
  payload?: unknown
  ref?: unknown
  join_ref?: unknown
}

/** What a topic hands its subscriptions. */
export interface Listener {
  deliver(event: RealtimeEvent): void
  fail(error: Error): void
  /** The topic joined again (not the first join), after replaying what it could. */
  rejoined(event: RejoinEvent): void
  /** The topic was left (`manager.unsubscribe(topic)`): the subscription is closed. */
  close(): void
}

/** What a topic needs from its manager. */
export interface TopicHost {
  readonly timeoutMs: number
  client(): RealtimeClient
  /** Every event once per topic, before the listeners (delivery acknowledgements). */
  observe(event: RealtimeEvent): void
  /** Errors of a topic nobody listens to any more. */
  report(error: Error): void
  /** The conversation's presence rows to start from, or null to start from the channel alone. */
  presenceSnapshot(conversationId: string): Promise<PresenceEvent[] | null>
  /** Whether a typing event is this user's own and nobody asked for those. */
  ownTyping(event: TypingIndicatorEvent): boolean
}

type Json = Record<string, unknown>

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** How long a typing timer may wait: the server lets an indicator claim 30 s ahead at most. */
const MAX_TYPING_WAIT_MS = 35_000

type PostgresChangesOptions = NonNullable<RealtimeChannelOptions['config']['postgres_changes_options']>

export class Topic {
  readonly listeners = new Set<Listener>()
  /** The presence of the conversation, on `presence:<id>` topics. */
  readonly presence: PresenceView | null
  channel: RealtimeChannel | null = null
  /** The last change position seen: where a rejoin resumes. */
  lastPosition: number | null = null
  ready: Promise<void> = Promise.resolve()

  private settleReady: (error?: Error) => void = () => {}
  /** Set when the channel ended for good: refused, closed by the server, or left. */
  private ended: 'errored' | 'closed' | null = null
  private leaving = false
  /** The join's refusal, seen in its reply just before realtime-js reports CHANNEL_ERROR. */
  private refusal: string | null = null
  private crashed = false
  /** A connection loss was reported and the channel has not joined since. */
  private outage = false
  private readonly typingTimers = new Map<string, ReturnType<typeof setTimeout>>()
  /** The presence snapshot is read once per open, not on every rejoin (resume covers those). */
  private snapshotLoaded = false
  /** A join was confirmed already: the next confirmed one is a rejoin. */
  private subscribedOnce = false
  /** The server said, during the current join, that history after the position is lost. */
  private historyLost = false

  constructor(
    readonly name: string,
    private readonly bindings: readonly Binding[],
    private readonly host: TopicHost,
  ) {
    this.presence = name.startsWith('presence:')
      ? new PresenceView((event) => this.broadcast({ kind: 'presence', event }))
      : null
  }

  get state(): SubscriptionState {
    if (this.ended !== null) return this.ended
    return this.channel?.state ?? 'closed'
  }

  /** Whether the channel ended for good and only `reopen` brings it back. */
  get isEnded(): boolean {
    return this.ended !== null
  }

  /** Join a new channel, resuming after `lastPosition` when there is one. */
  open(): void {
    this.restart()
    this.join()
  }

  /** Join again after the channel ended (a new token may be allowed what the old one was not). */
  async reopen(): Promise<void> {
    this.restart() // at once: `ready` is the new join's from now on
    const channel = this.channel
    this.channel = null
    if (channel !== null) await this.remove(channel)
    if (this.ended === null) this.join() // not closed meanwhile
  }

  private restart(): void {
    this.ended = null
    this.leaving = false
    this.refusal = null
    this.crashed = false
    this.outage = false
    this.snapshotLoaded = false
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = (error) => {
        this.settleReady = () => {}
        if (error) reject(error)
        else resolve()
      }
    })
    this.ready.catch(() => {}) // awaiting it is optional: errors also go to onError
  }

  private join(): void {
    const client = this.host.client()
    // realtime-js passes config.postgres_changes_options through to the join untouched, and
    // the server reads the resume position from there (docs/changes.md); the option type does
    // not know `resume`, hence the cast.
    const options: Json = {}
    if (this.lastPosition !== null) options['resume'] = { position: this.lastPosition }
    const channel = client.channel(this.name, {
      config: {
        // ack: the server answers typing broadcasts, refusals included.
        broadcast: { ack: true, self: false },
        presence: { key: '', enabled: this.presence !== null },
        private: false,
        postgres_changes_options: options as PostgresChangesOptions,
      },
    })
    this.channel = channel
    for (const binding of this.bindings) {
      // Changes are delivered from the decoded frame (Topic.observe), where data.position is
      // still there: realtime-js's payload transform drops it. The binding makes the join ask
      // for them and realtime-js check the server's echo.
      channel.on('postgres_changes', binding, () => {})
    }
    const presence = this.presence
    if (presence !== null) {
      channel.on('presence', { event: 'sync' }, () => {
        if (this.channel === channel) presence.sync(channel.presenceState<Record<string, unknown>>())
      })
    }
    channel.subscribe((status, error) => {
      if (this.channel === channel) this.onStatus(channel, status, error)
    }, this.host.timeoutMs)
  }

  /** Leave the channel (unsubscribe); the topic can be opened again afterwards. */
  async close(): Promise<void> {
    this.leaving = true
    this.ended = 'closed'
    this.clearTyping()
    this.settleReady(new ChannelClosedError(this.name, 'unsubscribed'))
    const channel = this.channel
    this.channel = null
    if (channel !== null) await this.remove(channel)
  }

  /** Leave a channel unless realtime-js already dropped it (closed by the server, refused). */
  private async remove(channel: RealtimeChannel): Promise<void> {
    const client = this.host.client()
    if (client.getChannels().includes(channel)) await client.removeChannel(channel)
  }

  /** A frame of this topic, seen by the socket's decoder before realtime-js handles it. */
  observe(frame: Frame): void {
    const channel = this.channel
    if (channel === null) return
    const joinRef = channel.joinPush.ref
    const payload = isObject(frame.payload) ? frame.payload : {}
    if (frame.event === 'phx_reply') {
      if (frame.ref == null || frame.ref !== joinRef) return
      if (payload['status'] === 'error') {
        const response = payload['response']
        const reason = isObject(response) ? response['reason'] : response
        this.refusal = typeof reason === 'string' ? reason : JSON.stringify(reason)
        return
      }
      this.historyLost = false // this join's verdict follows its reply
      if (payload['status'] === 'ok' && this.bindings.length === 0) {
        this.settleReady()
      }
      return
    }
    // A frame of an earlier join of this topic (phoenix drops these too).
    if (typeof frame.join_ref === 'string' && joinRef != null && frame.join_ref !== joinRef) return
    switch (frame.event) {
      case 'postgres_changes':
        if (isObject(payload['data'])) this.acceptChange(payload['data'])
        break
      case 'system':
        this.acceptSystem(payload)
        break
      case 'phx_error':
        this.crashed = true
        break
    }
  }

  private acceptChange(data: ChangeData): void {
    const position = data.position
    if (typeof position === 'number' && Number.isInteger(position)) {
      // A replay may overlap what was already delivered: drop what is not after it.
      if (this.lastPosition !== null && position <= this.lastPosition) return
      this.advance(position)
    }
    let event: RealtimeEvent | null
    try {
      event = eventFromChange(data)
    } catch (cause) {
      this.fail(new RealtimeError(`unexpected change from the server: ${String(cause)}`, { cause }))
      return
    }
    if (event === null) return
    if (event.kind === 'presence' && this.presence !== null) {
      // The view merges the row with the channel's presence and reports it (broadcast).
      this.presence.row(event.event)
      return
    }
    this.broadcast(event)
  }

  private acceptSystem(payload: Json): void {
    const status = payload['status']
    const message = String(payload['message'] ?? '')
    if (payload['extension'] !== 'postgres_changes') {
      if (status === 'error') this.fail(new ChannelError(this.name, message))
      return
    }
    if (status !== 'ok') {
      const error = new ChannelError(this.name, message)
      this.settleReady(error)
      this.fail(error)
      return
    }
    const position = payload['position']
    const at = typeof position === 'number' && Number.isInteger(position) ? position : null
    if (payload['history_lost'] === true) {
      this.historyLost = true
      this.fail(new HistoryLostError(this.name, at))
      return // "Subscribed to PostgreSQL" follows
    }
    // Complete when the join resumed from a position and nothing after it was lost.
    const complete = this.lastPosition !== null && !this.historyLost
    this.historyLost = false
    // Where the subscription starts: an idle channel resumes from here too.
    if (at !== null && (this.lastPosition === null || at > this.lastPosition)) this.advance(at)
    this.settleReady()
    if (this.presence !== null && !this.snapshotLoaded) {
      this.snapshotLoaded = true
      void this.loadPresence(this.presence)
    }
    if (this.subscribedOnce) this.rejoined(complete)
    this.subscribedOnce = true
  }

  private rejoined(complete: boolean): void {
    const event: RejoinEvent = { topic: this.name, complete }
    const conversation = /^(?:conversation|presence):(.+)$/.exec(this.name)?.[1]
    if (conversation !== undefined) event.conversationId = conversation
    if (this.lastPosition !== null) event.position = this.lastPosition
    for (const listener of this.listeners) listener.rejoined(event)
  }

  /** Remember the position and put it in the join payload, for whatever rejoin comes next. */
  private advance(position: number): void {
    this.lastPosition = position
    const channel = this.channel
    if (channel === null) return
    const current = channel.joinPush.payload()
    const config = isObject(current['config']) ? current['config'] : {}
    const options = isObject(config['postgres_changes_options'])
      ? config['postgres_changes_options']
      : {}
    channel.updateJoinPayload({
      config: { ...config, postgres_changes_options: { ...options, resume: { position } } },
    })
  }

  private async loadPresence(view: PresenceView): Promise<void> {
    try {
      const rows = await this.host.presenceSnapshot(this.name.slice('presence:'.length))
      if (rows !== null && !this.isEnded) view.snapshot(rows)
    } catch (error) {
      this.fail(error instanceof Error ? error : new RealtimeError(String(error)))
    }
  }

  private onStatus(
    channel: RealtimeChannel,
    status: REALTIME_SUBSCRIBE_STATES,
    error: Error | undefined,
  ): void {
    switch (status) {
      case REALTIME_SUBSCRIBE_STATES.SUBSCRIBED:
        this.outage = false
        this.crashed = false
        if (this.bindings.length === 0) this.settleReady()
        return
      case REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR: {
        if (this.refusal !== null) {
          // Refused: realtime-js would retry every few seconds forever; a refusal stands until
          // the token changes (setAuth reopens the topic).
          const refused = new JoinRefusedError(this.name, this.refusal)
          this.refusal = null
          this.end('errored', refused)
          void this.remove(channel)
          return
        }
        if (this.crashed) {
          this.crashed = false
          this.fail(new ChannelError(this.name, 'channel crashed on the server; rejoining'))
          return
        }
        if (!this.outage) {
          this.outage = true
          const message = error?.message ? `: ${error.message}` : ''
          this.fail(new ConnectionLostError(`${this.name}: connection lost${message}; reconnecting`))
        }
        return
      }
      case REALTIME_SUBSCRIBE_STATES.TIMED_OUT:
        if (!this.outage) {
          this.outage = true
          this.fail(new ConnectionLostError(`${this.name}: no join reply in time; retrying`))
        }
        return
      case REALTIME_SUBSCRIBE_STATES.CLOSED:
        if (this.leaving || this.ended !== null) return
        this.end('closed', new ChannelClosedError(this.name, 'closed by the server'))
        return
    }
  }

  private end(state: 'errored' | 'closed', error: Error): void {
    this.ended = state
    this.clearTyping()
    this.settleReady(error)
    this.fail(error)
  }

  /** Hand an event to every listener (after the manager saw it). */
  private broadcast(event: RealtimeEvent): void {
    if (event.kind === 'typing' && !this.acceptTyping(event.event)) return
    this.deliver(event)
  }

  private deliver(event: RealtimeEvent): void {
    this.host.observe(event)
    for (const listener of this.listeners) listener.deliver(event)
  }

  fail(error: Error): void {
    if (this.listeners.size === 0) {
      this.host.report(error)
      return
    }
    for (const listener of this.listeners) listener.fail(error)
  }

  /**
   * Typing as a UI wants it: one `isTyping: true` when a participant starts and one
   * `isTyping: false` when they stop, per burst; false if the event should not be delivered.
   * The feed carries more (a refresh every few seconds, the stop, the row's deletion at
   * expiry); a participant types while a timer runs here (`typingTimers`).
   *
   * Typing ends at `expiresAt` unless a newer change says otherwise. The server deletes expired
   * indicators itself, but a client must not show someone typing for as long as that change
   * takes (or while the connection is down).
   */
  private acceptTyping(event: TypingIndicatorEvent): boolean {
    if (this.host.ownTyping(event)) return false
    const key = `${event.conversationId}:${participantOf(event) ?? event.id}`
    const timer = this.typingTimers.get(key)
    if (timer !== undefined) clearTimeout(timer)
    this.typingTimers.delete(key)
    if (!event.isTyping) return timer !== undefined // a stop of what was shown
    this.setTypingTimer(key, event)
    return timer === undefined // a refresh changes nothing shown
  }

  private setTypingTimer(key: string, event: TypingIndicatorEvent): void {
    const wait = Math.min(Math.max(0, parseTimestamp(event.expiresAt) - Date.now()), MAX_TYPING_WAIT_MS)
    this.typingTimers.set(
      key,
      setTimeout(() => {
        this.typingTimers.delete(key)
        // Noticed by this client, not a change of the feed: no position.
        const { position: _position, ...rest } = event
        this.deliver({ kind: 'typing', event: { ...rest, isTyping: false, change: 'UPDATE' } })
      }, Number.isNaN(wait) ? 0 : wait),
    )
  }

  private clearTyping(): void {
    for (const timer of this.typingTimers.values()) clearTimeout(timer)
    this.typingTimers.clear()
  }
}
