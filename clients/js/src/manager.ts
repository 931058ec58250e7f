/**
 * `RealtimeMessagingManager`: the documented subscriptions and calls, over one
 * `@supabase/realtime-js` RealtimeClient and the HTTP API, with the Python SDK's guarantees:
 * resume after every reconnect with nothing missed or repeated, delivery acknowledged by
 * itself, typing that stops at its expiry, presence from the live channel.
 */

import {
  RealtimeClient,
  type RealtimeClientOptions,
  type WebSocketLikeConstructor,
} from '@supabase/realtime-js'
import { ApiError, RealtimeError } from './errors.js'
import {
  messageFromApi,
  presenceFromApi,
  type Attachment,
  type MessageEvent,
  type PresenceEvent,
  type PresenceStatus,
  type RealtimeEvent,
  type TypingIndicatorEvent,
} from './events.js'
import { Http, type Fetch } from './http.js'
import { identityOfToken, type Identity } from './identity.js'
import { Subscription, type SubscriptionHandlers } from './subscription.js'
import { Topic, type Binding, type Frame, type Listener, type TopicHost } from './topic.js'
import type {
  ConversationCounts,
  ConversationFilters,
  ConversationEntry,
  ConversationPage,
  ConversationStatus,
  SearchOptions,
  SearchPage,
  SearchResult,
} from './search.js'

export interface RealtimeManagerOptions {
  /**
   * The user's token: a staff JWT or a customer's portal token (`pt_…`). It names the
   * channels' identity (sent in each join) and authenticates the HTTP calls; the socket itself
   * connects with the anon key, as supabase-js does.
   */
  accessToken?: string | null
  /** The WebSocket class where there is no global one (Node 20: `WebSocket` from `ws`). */
  transport?: WebSocketLikeConstructor
  /** Errors no subscription's onError took: failed acknowledgements, unwatched topics. */
  onError?: (error: Error) => void
  /** Acknowledge delivery of the messages addressed to this user (default true). */
  autoAckDelivery?: boolean
  /**
   * Also report the typing of this token's owner, from any of their clients (default false:
   * `onTyping` hears only the others, which is what a "… is typing" line wants).
   */
  includeOwnTyping?: boolean
  /** The fetch used for HTTP calls (default: the global one). */
  fetch?: Fetch
  /** Milliseconds a join or a push (typing) may take before it times out (default 10000). */
  timeoutMs?: number
  /** Milliseconds an HTTP call may take (default 30000). */
  requestTimeoutMs?: number
  /** Milliseconds between heartbeats (default 25000); a missed reply drops the connection. */
  heartbeatIntervalMs?: number
  /** The wait before reconnect attempt `tries` (1-based), default {@link reconnectDelay}. */
  reconnectAfterMs?: (tries: number) => number
}

export interface SendMessageOptions {
  attachments?: Attachment[]
  /** Files uploaded with `uploadAttachment`, by id; `content` may then be `''`. */
  attachmentIds?: string[]
  /** Chosen by the client so that a retried send is not duplicated (the first one returns). */
  clientMessageId?: string
}

export interface UploadOptions {
  /** Shown to the other side and suggested on download (reduced to a safe name). */
  filename?: string
  /** Checked against the file's first bytes by the server. */
  contentType?: string
  /** The upload's time limit (default 10 minutes). */
  timeoutMs?: number
}

/** An uploaded file, as the server describes it. */
export interface UploadedAttachment {
  id: string
  conversationId: string
  filename: string
  contentType: string
  size: number
  sha256: string
  /** The message it was sent with; null until then. */
  messageId: string | null
  createdAt: string
}

export interface MessagePage {
  /** Newest first. */
  messages: MessageEvent[]
  /** The cursor of the next (older) page, null on the last. */
  nextCursor: string | null
}

/** Every `customer_messages`-related table a messages topic carries. */
const MESSAGE_TABLES: readonly Binding[] = [
  { event: 'INSERT', schema: 'public', table: 'customer_messages' },
  // Edits and deletes (tombstones) of messages already sent.
  { event: 'UPDATE', schema: 'public', table: 'customer_messages' },
  { event: 'INSERT', schema: 'public', table: 'message_read_receipts' },
  { event: '*', schema: 'public', table: 'message_typing_indicators' },
  { event: '*', schema: 'public', table: 'message_delivery_status' },
]
/**
 * A user's own messages topic also carries the conversations' changes (status, assignment),
 * for live lists and counts. Not `conversation:<id>`: its filter names `conversation_id`, which
 * the conversations table does not have (the server would refuse the whole join).
 */
const OWN_TABLES: readonly Binding[] = [
  ...MESSAGE_TABLES,
  { event: '*', schema: 'public', table: 'conversations' },
]
const PRESENCE_TABLES: readonly Binding[] = [{ event: '*', schema: 'public', table: 'user_presence' }]
/** The most customers (or staff) one {@link RealtimeMessagingManager.subscribeToCustomersPresence} names
 * (the server's bound on the values of one `in.(…)` filter). */
export const PRESENCE_OF_MOST = 100
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Acknowledged message ids remembered (a replay older than this is rare; twice is harmless). */
const ACKED_MEMORY = 10_000
const MAX_BATCH = 500

/** `http(s)://host[/base]` -> `ws(s)://host[/base]/realtime/v1` (realtime-js adds `/websocket`). */
export function socketUrl(httpUrl: string): string {
  const url = new URL(httpUrl)
  url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/realtime/v1`
  url.search = ''
  url.hash = ''
  return url.toString()
}

const QUICK_RETRIES_MS = [10, 50, 100]
/** Attempts in the quick phase: the three above, then every 75 ms on average, about 5 s in all. */
const QUICK_ATTEMPTS = 66

/**
 * The default reconnect schedule, the Python SDK's: a restarted server is usually back within
 * seconds, so quick jittered retries first (10 ms, 50 ms, then every 50 to 100 ms for about
 * 5 s: a client is back at most 100 ms after the server listens again, and a refused attempt
 * costs the server only a reset), then exponential backoff from 0.5 s capped at 30 s. Jitter
 * keeps a thousand clients from retrying in step. (The Python SDK retries every 25 to 50 ms
 * while the port refuses connections outright; a browser cannot tell that case apart.)
 */
export function reconnectDelay(tries: number): number {
  const jitter = 0.5 + Math.random() / 2
  if (tries <= QUICK_ATTEMPTS) {
    const step = QUICK_RETRIES_MS[Math.min(Math.max(tries, 1), QUICK_RETRIES_MS.length) - 1] ?? 100
    return Math.round(step * jitter)
  }
  return Math.round(Math.min(30_000, 500 * 2 ** Math.min(tries - QUICK_ATTEMPTS - 1, 16)) * jitter)
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

interface Reply {
  status: string
  response: unknown
}

export class RealtimeMessagingManager {
  /** The server's HTTP base URL. */
  readonly url: string
  readonly anonKey: string
  private token: string | null
  /** Who the token names (for acknowledgements), read once per token. */
  private me: Identity | null
  private readonly options: RealtimeManagerOptions
  private readonly http: Http
  private realtime: RealtimeClient | null = null
  private readonly topics = new Map<string, Topic>()
  private readonly host: TopicHost
  /** Pushes waiting for their reply, by ref. */
  private readonly pending = new Map<string, (reply: Reply | Error) => void>()
  private refs = 0
  /** Topics made by subscribeToCustomersPresence and subscribeToStaffPresence so far (a set each). */
  private presenceLists = 0
  private closed = false
  private identity: Promise<Identity> | null = null
  /** Acknowledged message ids, oldest first (bounded). */
  private readonly acked = new Set<string>()
  private toAck: string[] = []
  private ackTimer: ReturnType<typeof setTimeout> | null = null
  private ackDelayMs = 500
  private flushing: Promise<void> | null = null

  constructor(url: string, anonKey: string, options: RealtimeManagerOptions = {}) {
    this.url = url.replace(/\/+$/, '')
    this.anonKey = anonKey
    this.token = options.accessToken ?? null
    this.me = identityOfToken(this.token)
    this.options = options
    const timeoutMs = options.timeoutMs ?? 10_000
    const userFetch = options.fetch
    this.http = new Http({
      baseUrl: this.url,
      anonKey,
      token: () => this.token,
      // Resolved per call, unbound: a stored window.fetch called as a method throws.
      fetch: userFetch ?? ((input, init) => fetch(input, init)),
      timeoutMs: options.requestTimeoutMs ?? 30_000,
    })
    this.host = {
      timeoutMs,
      client: () => this.client(),
      observe: (event) => this.observe(event),
      report: (error) => this.report(error),
      presenceSnapshot: (conversationId) => this.presenceSnapshot(conversationId),
      ownTyping: (event) => this.ownTyping(event),
    }
  }

  /** The current access token. */
  get accessToken(): string | null {
    return this.token
  }

  /**
   * Whether a typing event is this user's own and is not wanted. A customer sees only their own
   * conversations, each of which has one customer: any customer's typing there is theirs, even
   * behind an opaque portal token.
   */
  private ownTyping(event: TypingIndicatorEvent): boolean {
    if (this.options.includeOwnTyping === true) return false
    const me = this.me
    if (me === null) return false
    if (me.kind === 'customer') {
      return event.customerId !== undefined && (me.customerId ?? event.customerId) === event.customerId
    }
    return event.userId !== undefined && event.userId === me.userId
  }

  // -- subscriptions -----------------------------------------------------------------------

  /**
   * A customer's messages, receipts, typing and delivery status, and their conversations'
   * changes: `customer:<id>:messages`.
   */
  subscribeToCustomerMessages(customerId: string, handlers: SubscriptionHandlers = {}): Subscription {
    return this.subscribe(`customer:${customerId}:messages`, OWN_TABLES, handlers)
  }

  /**
   * What a staff user sees (every conversation's events and changes): `staff:<id>:messages`.
   */
  subscribeToStaffMessages(userId: string, handlers: SubscriptionHandlers = {}): Subscription {
    return this.subscribe(`staff:${userId}:messages`, OWN_TABLES, handlers)
  }

  /** One conversation: `conversation:<id>`, filtered on the server to that conversation. */
  subscribeToConversation(conversationId: string, handlers: SubscriptionHandlers = {}): Subscription {
    const filter = `conversation_id=eq.${conversationId}`
    return this.subscribe(
      `conversation:${conversationId}`,
      MESSAGE_TABLES.map((binding) => ({ ...binding, filter })),
      handlers,
    )
  }

  /**
   * Presence in a conversation: `presence:<id>`. Joining it makes this user present there (the
   * server tracks them by itself); `userId`/`customerId` are the documented arguments, the
   * token says who it is. `onPresence` gets every change; `getPresence` and `isOnline` read
   * the merged view.
   */
  subscribeToPresence(
    conversationId: string,
    userId?: string | null,
    customerId?: string | null,
    onPresence?: ((presence: PresenceEvent) => void | Promise<void>) | SubscriptionHandlers,
  ): Subscription {
    void userId
    void customerId
    const handlers = typeof onPresence === 'function' ? { onPresence } : (onPresence ?? {})
    return this.subscribe(`presence:${conversationId}`, PRESENCE_TABLES, handlers)
  }

  /**
   * The presence of these customers, live (a staff user's list of conversations: the dots of
   * the customers shown, not only of the open conversation). One channel on a topic of this
   * manager's own, whose binding names the customers (`customer_id=in.(…)`): the first
   * {@link PRESENCE_OF_MOST} of them, ids that are not UUIDs left out. A new set is a new
   * subscription: unsubscribe the old one. Staff and the service role see these rows; a
   * customer sees only its own, so for a customer the channel carries nothing else.
   */
  subscribeToCustomersPresence(
    customerIds: readonly string[],
    onPresence: ((presence: PresenceEvent) => void | Promise<void>) | SubscriptionHandlers,
  ): Subscription {
    return this.presenceOf('customers', 'customer_id', customerIds, onPresence)
  }

  /**
   * The presence of these staff users, live (a customer's list of conversations: the dots of
   * its agents). Filtered on the server (`user_id=in.(…)`), the first {@link PRESENCE_OF_MOST},
   * as for customers. Staff see every staff row; a customer sees those of the staff of its
   * conversations (assigned to one or who wrote in one) as of the subscription's join, so a new
   * agent is a new set: subscribe again.
   */
  subscribeToStaffPresence(
    userIds: readonly string[],
    onPresence: ((presence: PresenceEvent) => void | Promise<void>) | SubscriptionHandlers,
  ): Subscription {
    return this.presenceOf('staff', 'user_id', userIds, onPresence)
  }

  private presenceOf(
    kind: string,
    column: string,
    values: readonly string[],
    onPresence: ((presence: PresenceEvent) => void | Promise<void>) | SubscriptionHandlers,
  ): Subscription {
    const ids = [...new Set(values.filter((id) => UUID.test(id)))].slice(0, PRESENCE_OF_MOST)
    const handlers = typeof onPresence === 'function' ? { onPresence } : onPresence
    const filter = `${column}=in.(${ids.join(',')})`
    const bindings = PRESENCE_TABLES.map((binding) => ({ ...binding, filter }))
    return this.subscribe(`${kind}-presence:${++this.presenceLists}`, bindings, handlers)
  }

  /** Leave a topic (`'customer:<id>:messages'`, with or without `realtime:`); false if none. */
  async unsubscribe(channelName: string): Promise<boolean> {
    const topic = this.topics.get(channelName.replace(/^realtime:/, ''))
    if (topic === undefined) return false
    for (const listener of topic.listeners) listener.close()
    topic.listeners.clear()
    await this.drop(topic)
    return true
  }

  async unsubscribeAll(): Promise<void> {
    await Promise.all([...this.topics.keys()].map((name) => this.unsubscribe(name)))
  }

  private subscribe(
    name: string,
    bindings: readonly Binding[],
    handlers: SubscriptionHandlers,
  ): Subscription {
    this.ensureOpen()
    let topic = this.topics.get(name)
    if (topic === undefined) {
      topic = new Topic(name, bindings, this.host)
      topic.open() // throws without a WebSocket (Node 20 without `transport`)
      this.topics.set(name, topic)
    } else if (topic.isEnded) {
      void topic.reopen().catch((error: unknown) => this.report(asError(error)))
    }
    return new Subscription(topic, handlers, (error) => this.report(error), (_, listener) =>
      this.release(topic, listener),
    )
  }

  private async release(topic: Topic, listener: Listener): Promise<void> {
    topic.listeners.delete(listener)
    if (topic.listeners.size === 0 && this.topics.get(topic.name) === topic) await this.drop(topic)
  }

  private async drop(topic: Topic): Promise<void> {
    this.topics.delete(topic.name)
    try {
      await topic.close()
    } catch (error) {
      this.report(asError(error))
    }
  }

  // -- the socket --------------------------------------------------------------------------

  /** The RealtimeClient, created on first use (REST-only use needs no WebSocket). */
  private client(): RealtimeClient {
    if (this.realtime !== null) return this.realtime
    const options: RealtimeClientOptions = {
      params: { apikey: this.anonKey },
      // 1.0.0: JSON frames both ways. Under 2.0.0 realtime-js sends broadcasts as binary
      // frames, which the server relays but does not take as typing indicators.
      vsn: '1.0.0',
      decode: (raw, callback) => callback(this.decode(raw)),
      timeout: this.host.timeoutMs,
      heartbeatIntervalMs: this.options.heartbeatIntervalMs ?? 25_000,
      reconnectAfterMs: this.options.reconnectAfterMs ?? reconnectDelay,
    }
    if (this.options.transport !== undefined) options.transport = this.options.transport
    const client = new RealtimeClient(socketUrl(this.url), options)
    // A token given as a string (not realtime-js's callback) is used as is for every join and
    // refresh. setAuth stores it before its first await, so the first join already carries it.
    if (this.token) void client.setAuth(this.token)
    this.realtime = client
    return client
  }

  /**
   * Decode a frame and look at it before realtime-js does: changes still carry their position
   * here, join replies their refusal reason, push replies the ref they answer.
   */
  private decode(raw: ArrayBuffer | string): { topic: string; event: string; payload: unknown } {
    let frame: unknown
    try {
      frame = typeof raw === 'string' ? JSON.parse(raw) : null
    } catch (cause) {
      this.report(new RealtimeError('malformed frame from the server', { cause }))
    }
    const topic = isObject(frame) ? frame['topic'] : undefined
    const event = isObject(frame) ? frame['event'] : undefined
    if (!isObject(frame) || typeof topic !== 'string' || typeof event !== 'string') {
      return { topic: '', event: '', payload: {} }
    }
    const message = { ...frame, topic, event, payload: frame['payload'] }
    try {
      this.observeFrame(message)
    } catch (error) {
      this.report(new RealtimeError(`handling ${message.event} failed: ${String(error)}`, { cause: error }))
    }
    return message
  }

  private observeFrame(frame: Frame & { topic: string; event: string }): void {
    if (frame.event === 'phx_reply' && typeof frame.ref === 'string') {
      const resolve = this.pending.get(frame.ref)
      if (resolve !== undefined) {
        const payload = isObject(frame.payload) ? frame.payload : {}
        resolve({ status: String(payload['status']), response: payload['response'] })
        return
      }
    }
    this.topics.get(frame.topic.replace(/^realtime:/, ''))?.observe(frame)
  }

  /** Send `event` on a joined topic and wait for its reply. */
  private push(topic: Topic, event: string, payload: Record<string, unknown>): Promise<Reply> {
    const channel = topic.channel
    const client = this.realtime
    if (channel === null || client === null || !client.isConnected()) {
      return Promise.reject(new RealtimeError(`${topic.name} is not joined`))
    }
    const ref = `rtm:${++this.refs}`
    const timeoutMs = this.host.timeoutMs
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref)
        reject(new RealtimeError(`${event} on ${topic.name}: no reply within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(ref, (reply) => {
        clearTimeout(timer)
        this.pending.delete(ref)
        if (reply instanceof Error) reject(reply)
        else resolve(reply)
      })
      const joinRef = channel.joinPush.ref
      client.push({ topic: channel.topic, event, payload, ref, ...(joinRef ? { join_ref: joinRef } : {}) })
    })
  }

  // -- calls -------------------------------------------------------------------------------

  private api(method: string, path: string, body?: unknown): Promise<unknown> {
    this.ensureOpen()
    return this.http.request(method, path, body)
  }

  /** Send a message as the token's owner; resolves to the created message. */
  async sendMessage(
    conversationId: string,
    content: string,
    options: SendMessageOptions = {},
  ): Promise<MessageEvent> {
    const body: Record<string, unknown> = { content }
    if (options.attachments !== undefined) body['attachments'] = options.attachments
    if (options.attachmentIds !== undefined) body['attachmentIds'] = options.attachmentIds
    if (options.clientMessageId !== undefined) body['clientMessageId'] = options.clientMessageId
    return messageFromApi(await this.api('POST', `/api/conversations/${enc(conversationId)}/messages`, body))
  }

  /**
   * Replace the content of one's own message within the server's edit window; resolves to the
   * message (`editedAt` set). Subscribers get it through `onMessage` as an `UPDATE`.
   */
  async editMessage(messageId: string, content: string): Promise<MessageEvent> {
    const data = await this.api('PATCH', `/api/messages/${enc(messageId)}`, { content })
    return messageFromApi(data, 'UPDATE')
  }

  /**
   * Delete a message, leaving a tombstone in its place (`deletedAt` set, content and attachments
   * emptied); deleting it again resolves to the same tombstone.
   */
  async deleteMessage(messageId: string): Promise<MessageEvent> {
    return messageFromApi(await this.api('DELETE', `/api/messages/${enc(messageId)}`), 'UPDATE')
  }

  /**
   * Upload a file to a conversation (docs/files.md); resolves to its details, whose `id` goes
   * in `sendMessage(conversationId, '', { attachmentIds: [id] })`. A `Blob` or `File` is
   * streamed by fetch, and names its type and filename unless the options do.
   */
  async uploadAttachment(
    conversationId: string,
    data: Blob | ArrayBuffer | Uint8Array<ArrayBuffer>,
    options: UploadOptions = {},
  ): Promise<UploadedAttachment> {
    this.ensureOpen()
    const named = typeof File !== 'undefined' && data instanceof File ? data.name : undefined
    const typed = typeof Blob !== 'undefined' && data instanceof Blob ? data.type : ''
    const query = new URLSearchParams({ filename: options.filename ?? named ?? 'attachment' })
    const uploaded = await this.http.request(
      'POST',
      `/api/conversations/${enc(conversationId)}/attachments?${query}`,
      undefined,
      {
        body: data,
        contentType: options.contentType ?? (typed || 'application/octet-stream'),
        timeoutMs: options.timeoutMs ?? 600_000,
      },
    )
    return uploaded as UploadedAttachment
  }

  /** A file's details and a signed download URL, valid for a few minutes (participants only). */
  async getAttachmentUrl(attachmentId: string): Promise<UploadedAttachment & { url: string; expiresAt: string }> {
    const data = await this.api('GET', `/api/attachments/${enc(attachmentId)}`)
    return data as UploadedAttachment & { url: string; expiresAt: string }
  }

  /** A page of history, newest first, and the cursor of the next (older) page. */
  async getMessages(
    conversationId: string,
    options: { limit?: number; before?: string | null } = {},
  ): Promise<MessagePage> {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) })
    if (options.before) query.set('before', options.before)
    const data = await this.api('GET', `/api/conversations/${enc(conversationId)}/messages?${query}`)
    const page = isObject(data) ? data : {}
    const messages = Array.isArray(page['messages']) ? page['messages'].map((m: unknown) => messageFromApi(m)) : []
    const cursor = page['nextCursor']
    return { messages, nextCursor: typeof cursor === 'string' ? cursor : null }
  }

  /**
   * Start (it expires after 5 s) or stop typing; the token says who types.
   *
   * Over the socket when a joined subscription covers the conversation (its own topic, or this
   * user's messages topic): the indicator is then tied to the connection and ends if it drops.
   * Otherwise over HTTP. Refusals reject with ApiError either way (429 for the rate limit).
   */
  async sendTypingIndicator(
    conversationId: string,
    userId?: string | null,
    customerId?: string | null,
    isTyping = true,
  ): Promise<void> {
    void userId
    void customerId
    this.ensureOpen()
    const topic = this.typingTopic(conversationId)
    if (topic === null) {
      await this.api('POST', `/api/conversations/${enc(conversationId)}/typing`, { isTyping })
      return
    }
    const reply = await this.push(topic, 'broadcast', {
      type: 'broadcast',
      event: 'typing',
      payload: { isTyping, conversationId },
    })
    if (reply.status === 'ok') return
    const response = reply.response
    const reason = String(isObject(response) ? (response['reason'] ?? JSON.stringify(response)) : response)
    if (/limit/i.test(reason)) {
      const retry = /retry in (\d+(?:\.\d+)?) s/.exec(reason)?.[1]
      throw new ApiError(429, 'rate_limited', reason, retry === undefined ? undefined : Number(retry))
    }
    throw new ApiError(422, 'refused', reason)
  }

  /** A joined topic on which the server takes typing for this conversation. */
  private typingTopic(conversationId: string): Topic | null {
    if (this.realtime === null || !this.realtime.isConnected()) return null
    let own: Topic | null = null
    for (const topic of this.topics.values()) {
      if (topic.state !== 'joined') continue
      if (topic.name === `conversation:${conversationId}`) return topic
      if (own === null && topic.name.endsWith(':messages')) own = topic
    }
    return own
  }

  /** Mark one message read as the token's owner (idempotent). */
  async markMessageAsRead(
    messageId: string,
    userId?: string | null,
    customerId?: string | null,
  ): Promise<void> {
    void userId
    void customerId
    await this.api('POST', `/api/messages/${enc(messageId)}/read`)
  }

  /** Mark up to 500 messages read in one request (all or nothing); resolves to their ids. */
  async markMessagesAsRead(messageIds: Iterable<string>): Promise<string[]> {
    const data = await this.api('POST', '/api/messages/read', { messageIds: [...messageIds] })
    return idsOf(data)
  }

  /** Set this user's presence; resolves to their presence row. */
  async updatePresence(
    userId: string | null | undefined,
    customerId: string | null | undefined,
    status: PresenceStatus,
    metadata?: Record<string, unknown>,
  ): Promise<PresenceEvent> {
    void userId
    void customerId
    const body: Record<string, unknown> = { status }
    if (metadata !== undefined) body['metadata'] = metadata
    return presenceFromApi(await this.api('PUT', '/api/presence', body))
  }

  /**
   * Messages the caller may see that match `q` (web-search syntax: words, "a phrase", -not),
   * best first, and the cursor of the next page. `snippet` is HTML: the text escaped, the
   * matched words in `<mark>`.
   */
  async search(q: string, options: SearchOptions = {}): Promise<SearchPage> {
    const query = new URLSearchParams({ q, limit: String(options.limit ?? 20) })
    if (options.conversationId) query.set('conversationId', options.conversationId)
    if (options.cursor) query.set('cursor', options.cursor)
    const data = await this.api('GET', `/api/search?${query}`)
    const page = isObject(data) ? data : {}
    const results = Array.isArray(page['results']) ? (page['results'] as SearchResult[]) : []
    const cursor = page['nextCursor']
    return { results, nextCursor: typeof cursor === 'string' ? cursor : null }
  }

  /**
   * A page of conversations, latest activity first, filtered by status, assignee (a staff
   * user's id, `'mine'` or `'unassigned'`) and unread; and the cursor of the next page.
   */
  async listConversations(options: ConversationFilters = {}): Promise<ConversationPage> {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) })
    if (options.status) query.set('status', options.status)
    if (options.assignee) query.set('assignee', options.assignee)
    if (options.unread !== undefined) query.set('unread', String(options.unread))
    if (options.before) query.set('before', options.before)
    const data = await this.api('GET', `/api/conversations?${query}`)
    const page = isObject(data) ? data : {}
    const conversations = Array.isArray(page['conversations'])
      ? (page['conversations'] as ConversationEntry[])
      : []
    const cursor = page['nextCursor']
    return { conversations, nextCursor: typeof cursor === 'string' ? cursor : null }
  }

  /**
   * How many conversations each inbox filter holds in `status` (default open), and per status.
   * For live badges, ask again when the inbox's subscription delivers a change (docs/api.md).
   */
  async getConversationCounts(status: ConversationStatus = 'open'): Promise<ConversationCounts> {
    const data = await this.api('GET', `/api/conversations/counts?${new URLSearchParams({ status })}`)
    return data as ConversationCounts
  }

  /** How many messages from the other side this user has not read, in all conversations. */
  async getUnreadCount(userId?: string | null, customerId?: string | null): Promise<number> {
    void userId
    void customerId
    const data = await this.api('GET', '/api/unread')
    return isObject(data) && typeof data['total'] === 'number' ? data['total'] : 0
  }

  /** Who the token is: read from a JWT, asked of the server for an opaque portal token. */
  async getIdentity(): Promise<Identity> {
    const known = identityOfToken(this.token)
    if (known !== null && (known.userId !== undefined || known.customerId !== undefined)) return known
    this.identity ??= this.api('GET', '/api/me').then((data) => {
      const me = isObject(data) ? data : {}
      const identity: Identity = { kind: me['kind'] === 'staff' ? 'staff' : 'customer' }
      if (typeof me['userId'] === 'string') identity.userId = me['userId']
      if (typeof me['customerId'] === 'string') identity.customerId = me['customerId']
      return identity
    })
    const identity = this.identity
    identity.catch(() => {
      if (this.identity === identity) this.identity = null // try again next time
    })
    return identity
  }

  /** The conversation's presence as the live `presence:<id>` subscription knows it. */
  getPresence(conversationId: string): PresenceEvent[] {
    return this.topics.get(`presence:${conversationId}`)?.presence?.list() ?? []
  }

  /** Whether that staff user or customer is online in the conversation (needs subscribeToPresence). */
  isOnline(conversationId: string, userOrCustomerId: string): boolean {
    return this.topics.get(`presence:${conversationId}`)?.presence?.isOnline(userOrCustomerId) ?? false
  }

  private async presenceSnapshot(conversationId: string): Promise<PresenceEvent[] | null> {
    // A customer sees no one's presence rows but their own: the channel alone is the truth
    // for the staff, and a snapshot of their rows could only go stale.
    if (this.me?.kind === 'customer') return null
    const data = await this.api('GET', `/api/conversations/${enc(conversationId)}/presence`)
    const participants = isObject(data) && Array.isArray(data['participants']) ? data['participants'] : []
    return participants.map(presenceFromApi)
  }

  // -- lifecycle ---------------------------------------------------------------------------

  /** Use a new token for HTTP calls, every joined channel and later joins; rejoin ended ones. */
  async setAuth(token: string): Promise<void> {
    this.ensureOpen()
    this.token = token
    this.me = identityOfToken(token)
    this.identity = null
    if (this.realtime === null) return
    await this.realtime.setAuth(token)
    await Promise.all(
      [...this.topics.values()].filter((topic) => topic.isEnded).map((topic) => topic.reopen()),
    )
  }

  /** Leave everything, send the last acknowledgements, close the socket; final. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true // no new subscriptions or calls from here on
    await this.unsubscribeAll()
    if (this.ackTimer !== null) clearTimeout(this.ackTimer)
    this.ackTimer = null
    if (this.flushing !== null) await this.flushing
    await this.flushAcks() // one last try
    for (const settle of [...this.pending.values()]) settle(new RealtimeError('this manager is closed'))
    const client = this.realtime
    this.realtime = null
    if (client !== null) await closeClient(client)
  }

  private ensureOpen(): void {
    if (this.closed) throw new RealtimeError('this manager is closed')
  }

  private report(error: Error): void {
    const onError = this.options.onError
    if (onError === undefined) {
      console.warn('realtime-messaging:', error)
      return
    }
    try {
      onError(error)
    } catch (failure) {
      console.warn('realtime-messaging: onError failed:', failure)
    }
  }

  // -- delivery acknowledgements -----------------------------------------------------------

  /**
   * Acknowledge what reached this client: the `sent` delivery rows addressed to this user.
   * By row, not by message, so nothing is sent for messages the server does not track for
   * this user (a staff user seeing a conversation assigned to someone else).
   */
  private observe(item: RealtimeEvent): void {
    if (this.options.autoAckDelivery === false || item.kind !== 'deliveryStatus') return
    const event = item.event
    if (event.status !== 'sent' || event.change === 'DELETE') return
    const me = this.me
    if (me === null || event.recipientType !== me.kind) return
    const myId = me.kind === 'staff' ? me.userId : me.customerId
    if (myId !== undefined && event.recipientId !== myId) return
    if (this.acked.has(event.messageId)) return
    this.acked.add(event.messageId)
    if (this.acked.size > ACKED_MEMORY) {
      const oldest = this.acked.values().next()
      if (!oldest.done) this.acked.delete(oldest.value)
    }
    this.toAck.push(event.messageId)
    if (this.ackTimer === null && this.flushing === null) this.scheduleAcks(50) // gather a burst
  }

  private scheduleAcks(delayMs: number): void {
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null
      this.flushing = this.flushAcks().then((done) => {
        this.flushing = null
        if (done) {
          this.ackDelayMs = 500
          if (this.toAck.length > 0 && !this.closed) this.scheduleAcks(50)
        } else if (!this.closed) {
          // The server was unreachable: the acknowledgements wait, they are not dropped.
          this.scheduleAcks(this.ackDelayMs)
          this.ackDelayMs = Math.min(this.ackDelayMs * 2, 10_000)
        }
      })
    }, delayMs)
  }

  /** Send what is queued; false when the server could not be reached (kept queued). */
  private async flushAcks(): Promise<boolean> {
    while (this.toAck.length > 0) {
      const batch = this.toAck.slice(0, MAX_BATCH)
      this.toAck = this.toAck.slice(MAX_BATCH)
      try {
        await this.http.request('POST', '/api/messages/delivered', { messageIds: batch })
      } catch (error) {
        if (error instanceof ApiError && error.status !== 0 && error.status < 500) {
          this.report(error) // refused (a deleted message): retrying cannot help
          continue
        }
        this.toAck = [...batch, ...this.toAck]
        return false
      }
    }
    return true
  }
}

/** The parts of realtime-js 2.119 that {@link closeClient} reaches past its public API. */
interface ClientInternals {
  _cancelPendingDisconnect?: () => void
  socketAdapter?: { getSocket?: () => { disconnect(callback: () => void): void } }
}

/**
 * Close a RealtimeClient without leaving a timer behind. realtime-js's `disconnect()` races the
 * close against a 10 s timer it never clears, which keeps a Node process alive for 10 s after
 * `close()`. Where 2.119 keeps them, cancel its deferred disconnect (scheduled when the last
 * channel left) and close the phoenix socket underneath, which has no such timer; fall back to
 * `disconnect()` otherwise.
 */
async function closeClient(client: RealtimeClient): Promise<void> {
  const internals = client as unknown as ClientInternals
  const socket = internals.socketAdapter?.getSocket?.()
  if (typeof internals._cancelPendingDisconnect !== 'function' || socket === undefined) {
    await client.disconnect()
    return
  }
  internals._cancelPendingDisconnect()
  await new Promise<void>((resolve) => socket.disconnect(resolve))
}

function enc(id: string): string {
  return encodeURIComponent(id)
}

function idsOf(data: unknown): string[] {
  const ids = isObject(data) ? data['messageIds'] : undefined
  return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === 'string') : []
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new RealtimeError(String(error))
}

// -- the shared manager --------------------------------------------------------------------

/** What `getRealtimeManager()` reads when it was not configured: `globalThis.RTM_CONFIG`. */
export interface RealtimeManagerConfig {
  url: string
  anonKey: string
  accessToken?: string | null
}

let shared: RealtimeMessagingManager | null = null

/** Configure the shared manager (closing the one before, if any) and return it. */
export function configureRealtimeManager(
  url: string,
  anonKey: string,
  options: RealtimeManagerOptions = {},
): RealtimeMessagingManager {
  const previous = shared
  shared = new RealtimeMessagingManager(url, anonKey, options)
  if (previous !== null) void previous.close().catch(() => {})
  return shared
}

function globalConfig(): RealtimeManagerConfig | null {
  const scope = globalThis as {
    RTM_CONFIG?: unknown
    process?: { env?: Record<string, string | undefined> }
  }
  const config = scope.RTM_CONFIG
  if (isObject(config) && typeof config['url'] === 'string' && typeof config['anonKey'] === 'string') {
    const token = config['accessToken']
    const accessToken = typeof token === 'string' ? token : null
    return { url: config['url'], anonKey: config['anonKey'], accessToken }
  }
  const env = scope.process?.env
  if (env?.['RTM_URL'] && env['RTM_ANON_KEY']) {
    return { url: env['RTM_URL'], anonKey: env['RTM_ANON_KEY'], accessToken: env['RTM_ACCESS_TOKEN'] || null }
  }
  return null
}

/**
 * The shared manager of the documented examples: the one `configureRealtimeManager` set up,
 * else one made from `globalThis.RTM_CONFIG = {url, anonKey, accessToken}` or, in Node, the
 * `RTM_URL`, `RTM_ANON_KEY` and `RTM_ACCESS_TOKEN` environment variables (as the Python SDK).
 */
export function getRealtimeManager(): RealtimeMessagingManager {
  if (shared !== null) return shared
  const config = globalConfig()
  if (config === null) {
    throw new RealtimeError(
      'no realtime manager configured: call configureRealtimeManager(url, anonKey, { accessToken }) ' +
        'or set globalThis.RTM_CONFIG = { url, anonKey, accessToken }',
    )
  }
  const accessToken = config.accessToken ?? null
  shared = new RealtimeMessagingManager(config.url, config.anonKey, { accessToken })
  return shared
}
