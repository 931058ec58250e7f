/**
 * The documented event interfaces (camelCase) and their construction from the change feed's
 * snake_case rows, the same mapping as the Python SDK's `events.py`.
 */

import type { ConversationStatus } from './search.js'

export type ChangeType = 'INSERT' | 'UPDATE' | 'DELETE'
export type SenderType = 'customer' | 'staff'
export type DeliveryStatus = 'sent' | 'delivered' | 'read' | 'failed'
export type PresenceStatus = 'online' | 'away' | 'offline'

/** A file attached to a message: whatever object the sender stored. */
export type Attachment = Record<string, unknown>

export interface MessageEvent {
  id: string
  conversationId: string
  content: string
  senderType: SenderType
  senderId: string
  createdAt: string
  attachments?: Attachment[]
  clientMessageId?: string
  /**
   * When the sender last edited it, and when it was deleted (a tombstone: empty content and
   * attachments, same id and place); absent when not. Edits and deletes arrive as `UPDATE`s.
   */
  editedAt?: string
  deletedAt?: string
  change: ChangeType
  /** The change feed position of this change (absent for messages read through the API). */
  position?: number
  /**
   * The recipient's delivery status when the message was read through the history API (the
   * initial state of the ✓ marks; live changes then arrive as DeliveryStatusEvents).
   */
  deliveryStatus?: DeliveryStatus
}

export interface ReadReceiptEvent {
  id: string
  messageId: string
  readByUserId?: string
  readByCustomerId?: string
  readAt: string
  conversationId: string
  position?: number
}

export interface TypingIndicatorEvent {
  id: string
  conversationId: string
  userId?: string
  customerId?: string
  /** False once the indicator was stopped, deleted or has expired. */
  isTyping: boolean
  startedAt: string
  expiresAt: string
  change: ChangeType
  position?: number
}

export interface DeliveryStatusEvent {
  id: string
  messageId: string
  conversationId: string
  status: DeliveryStatus
  recipientType: SenderType
  recipientId: string
  deliveredAt?: string
  readAt?: string
  failedReason?: string
  change: ChangeType
  position?: number
}

export interface PresenceEvent {
  id: string
  userId?: string
  customerId?: string
  status: PresenceStatus
  lastSeenAt: string
  metadata?: Record<string, unknown>
  position?: number
}

/** A conversation's row as the change feed carries it: what a conversation list shows of it. */
export interface ConversationRow {
  id: string
  customerId: string
  subject: string | null
  status: ConversationStatus
  /** The staff user it is assigned to; null: unassigned. */
  assignedUserId: string | null
  createdAt: string
  updatedAt: string
}

/**
 * A conversation was created (`INSERT`), changed (`UPDATE`: status, assignee, subject) or
 * deleted (`DELETE`, with its last row), wherever the change was made: the staff and customer
 * messages topics carry them, so a list and its counts can follow without polling.
 */
export interface ConversationEvent {
  type: ChangeType
  conversation: ConversationRow
  /** On an `UPDATE`, the row before it (to tell e.g. "was assigned to me" from "is"). */
  previous?: ConversationRow
  position?: number
}

/**
 * A subscription joined again after a reconnect (or a channel crash, or `setAuth` reopening
 * it), and changes flow again. Not sent for the first join.
 */
export interface RejoinEvent {
  /** The topic without `realtime:`, e.g. `conversation:<id>`. */
  topic: string
  /** The conversation of a `conversation:<id>` or `presence:<id>` topic. */
  conversationId?: string
  /**
   * True when every change since the last position seen was replayed (it reached the other
   * handlers before this event); false when some were lost (older than the server's
   * retention): reload what the UI shows.
   */
  complete: boolean
  /** Where the subscription carries on live from. */
  position?: number
}

export type RealtimeEvent =
  | { kind: 'message'; event: MessageEvent }
  | { kind: 'readReceipt'; event: ReadReceiptEvent }
  | { kind: 'typing'; event: TypingIndicatorEvent }
  | { kind: 'deliveryStatus'; event: DeliveryStatusEvent }
  | { kind: 'presence'; event: PresenceEvent }
  | { kind: 'conversation'; event: ConversationEvent }

/** One `postgres_changes` `data` object as the server sends it (docs/changes.md). */
export interface ChangeData {
  table?: unknown
  type?: unknown
  record?: unknown
  old_record?: unknown
  position?: unknown
}

type Row = Record<string, unknown>

function isObject(value: unknown): value is Row {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** A required column as a string; a missing one means a change this client cannot read. */
function req(row: Row, key: string): string {
  const value = row[key]
  if (value === undefined || value === null) {
    throw new TypeError(`the change has no ${key}`)
  }
  return String(value)
}

/** `{key: value}` when the column holds a value, `{}` otherwise (optional event fields). */
function opt<K extends string>(row: Row, column: string, key: K): { [P in K]?: string } {
  const value = row[column]
  return value === undefined || value === null
    ? {}
    : ({ [key]: String(value) } as { [P in K]?: string })
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) {
    return value as T
  }
  throw new TypeError(`unexpected ${what}: ${String(value)}`)
}

const SENDERS = ['customer', 'staff'] as const
const DELIVERY = ['sent', 'delivered', 'read', 'failed'] as const
const PRESENCE = ['online', 'away', 'offline'] as const
const CHANGES = ['INSERT', 'UPDATE', 'DELETE'] as const
const STATUSES = ['open', 'pending', 'resolved', 'closed'] as const

function attachmentsOf(value: unknown): Attachment[] {
  return Array.isArray(value) ? value.filter(isObject) : []
}

/** A column that may be NULL: its value as a string, or null. */
function nullable(row: Row, key: string): string | null {
  const value = row[key]
  return value === undefined || value === null ? null : String(value)
}

function conversationOf(row: Row): ConversationRow {
  return {
    id: req(row, 'id'),
    customerId: req(row, 'customer_id'),
    subject: nullable(row, 'subject'),
    status: oneOf(row['status'], STATUSES, 'conversation status'),
    assignedUserId: nullable(row, 'assigned_user_id'),
    createdAt: req(row, 'created_at'),
    updatedAt: req(row, 'updated_at'),
  }
}

/** The row before an update, when the change carries a readable one (it is optional). */
function previousOf(value: unknown): { previous?: ConversationRow } {
  if (!isObject(value)) return {}
  try {
    return { previous: conversationOf(value) }
  } catch {
    return {}
  }
}

/** Milliseconds since the epoch of a feed timestamp (ISO 8601; no offset means UTC). */
export function parseTimestamp(value: string): number {
  const hasZone = /(?:[zZ]|[+-]\d\d(?::?\d\d)?)$/.test(value)
  return Date.parse(hasZone ? value : `${value}Z`)
}

/**
 * The typed event of one `postgres_changes` `data` object, or null for other tables and for
 * deleted messages and receipts. Throws TypeError on a row missing a required column.
 */
export function eventFromChange(data: ChangeData, now: number = Date.now()): RealtimeEvent | null {
  const change: ChangeType =
    data.type === undefined ? 'INSERT' : oneOf(data.type, CHANGES, 'change type')
  const deleted = change === 'DELETE'
  const source = deleted ? data.old_record : data.record
  const row: Row = isObject(source) ? source : {}
  const position =
    typeof data.position === 'number' && Number.isInteger(data.position)
      ? { position: data.position }
      : {}
  switch (data.table) {
    case 'customer_messages':
      if (deleted) return null
      return {
        kind: 'message',
        event: {
          id: req(row, 'id'),
          conversationId: req(row, 'conversation_id'),
          content: typeof row['content'] === 'string' ? row['content'] : '',
          senderType: oneOf(row['sender_type'], SENDERS, 'sender_type'),
          senderId: req(row, 'sender_id'),
          createdAt: req(row, 'created_at'),
          attachments: attachmentsOf(row['attachments']),
          ...opt(row, 'client_message_id', 'clientMessageId'),
          ...opt(row, 'edited_at', 'editedAt'),
          ...opt(row, 'deleted_at', 'deletedAt'),
          change,
          ...position,
        },
      }
    case 'message_read_receipts':
      if (deleted) return null
      return {
        kind: 'readReceipt',
        event: {
          id: req(row, 'id'),
          messageId: req(row, 'message_id'),
          ...opt(row, 'read_by_user_id', 'readByUserId'),
          ...opt(row, 'read_by_customer_id', 'readByCustomerId'),
          readAt: req(row, 'read_at'),
          conversationId: req(row, 'conversation_id'),
          ...position,
        },
      }
    case 'message_typing_indicators': {
      const expiresAt = req(row, 'expires_at')
      // Typing only while the row says so and has not expired: a replayed or late change of
      // an indicator that has lapsed meanwhile must not show someone typing.
      const expiry = parseTimestamp(expiresAt)
      const isTyping =
        !deleted && row['is_typing'] === true && (Number.isNaN(expiry) || expiry > now)
      return {
        kind: 'typing',
        event: {
          id: req(row, 'id'),
          conversationId: req(row, 'conversation_id'),
          ...opt(row, 'user_id', 'userId'),
          ...opt(row, 'customer_id', 'customerId'),
          isTyping,
          startedAt: req(row, 'started_at'),
          expiresAt,
          change,
          ...position,
        },
      }
    }
    case 'message_delivery_status':
      return {
        kind: 'deliveryStatus',
        event: {
          id: req(row, 'id'),
          messageId: req(row, 'message_id'),
          conversationId: req(row, 'conversation_id'),
          status: oneOf(row['status'], DELIVERY, 'delivery status'),
          recipientType: oneOf(row['recipient_type'], SENDERS, 'recipient_type'),
          recipientId: req(row, 'recipient_id'),
          ...opt(row, 'delivered_at', 'deliveredAt'),
          ...opt(row, 'read_at', 'readAt'),
          ...opt(row, 'failed_reason', 'failedReason'),
          change,
          ...position,
        },
      }
    case 'user_presence':
      return {
        kind: 'presence',
        event: {
          id: req(row, 'id'),
          ...opt(row, 'user_id', 'userId'),
          ...opt(row, 'customer_id', 'customerId'),
          // A deleted presence row (its user or customer was deleted) is nobody online.
          status: deleted ? 'offline' : oneOf(row['status'], PRESENCE, 'presence status'),
          lastSeenAt: req(row, 'last_seen_at'),
          metadata: isObject(row['metadata']) ? row['metadata'] : {},
          ...position,
        },
      }
    case 'conversations':
      return {
        kind: 'conversation',
        event: {
          type: change,
          conversation: conversationOf(row),
          ...(change === 'UPDATE' ? previousOf(data.old_record) : {}),
          ...position,
        },
      }
    default:
      return null
  }
}

/**
 * A message as the HTTP API returns it (camelCase already), as a MessageEvent; `change`: what
 * the call did to it (an edit or a delete is an `UPDATE`).
 */
export function messageFromApi(value: unknown, change: ChangeType = 'INSERT'): MessageEvent {
  const m = isObject(value) ? value : {}
  return {
    id: req(m, 'id'),
    conversationId: req(m, 'conversationId'),
    content: typeof m['content'] === 'string' ? m['content'] : '',
    senderType: oneOf(m['senderType'], SENDERS, 'senderType'),
    senderId: req(m, 'senderId'),
    createdAt: req(m, 'createdAt'),
    attachments: attachmentsOf(m['attachments']),
    ...opt(m, 'clientMessageId', 'clientMessageId'),
    ...opt(m, 'editedAt', 'editedAt'),
    ...opt(m, 'deletedAt', 'deletedAt'),
    change,
    ...deliveryOf(m['delivery']),
  }
}

function deliveryOf(value: unknown): { deliveryStatus?: DeliveryStatus } {
  const status = isObject(value) ? value['status'] : undefined
  return typeof status === 'string' && (DELIVERY as readonly string[]).includes(status)
    ? { deliveryStatus: status as DeliveryStatus }
    : {}
}

/** A presence row as the HTTP API returns it, as a PresenceEvent. */
export function presenceFromApi(value: unknown): PresenceEvent {
  const p = isObject(value) ? value : {}
  return {
    id: req(p, 'id'),
    ...opt(p, 'userId', 'userId'),
    ...opt(p, 'customerId', 'customerId'),
    status: oneOf(p['status'], PRESENCE, 'presence status'),
    lastSeenAt: req(p, 'lastSeenAt'),
    metadata: isObject(p['metadata']) ? p['metadata'] : {},
  }
}

/** The participant an event is about: its user id or customer id. */
export function participantOf(event: { userId?: string; customerId?: string }): string | undefined {
  return event.userId ?? event.customerId
}
