/** The JSON the HTTP API answers with (docs/api.md), as the pages use it. */

export type SenderType = 'customer' | 'staff';
export type DeliveryState = 'sent' | 'delivered' | 'read' | 'failed';
export type PresenceStatus = 'online' | 'away' | 'offline';

/** `GET /api/me`. */
export interface Me {
  kind: 'staff' | 'customer';
  userId: string | null;
  customerId: string | null;
}

export interface Conversation {
  id: string;
  customerId: string;
  subject: string | null;
  status: string;
  assignedUserId: string | null;
  createdAt: string;
  updatedAt: string | null;
  /** In lists and `GET /api/conversations/{id}`: the customer's name and the latest message. */
  customerName?: string | null;
  lastMessage?: { content: string; senderType: SenderType; createdAt: string } | null;
}

/** A message of `GET /api/conversations/{id}/messages` (with the recipient's delivery row). */
export interface HistoryMessage {
  id: string;
  conversationId: string;
  content: string;
  senderType: SenderType;
  senderId: string;
  createdAt: string;
  attachments?: unknown[];
  clientMessageId?: string | null;
  delivery?: { status: DeliveryState } | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PresenceRow {
  id: string;
  userId: string | null;
  customerId: string | null;
  status: PresenceStatus;
  lastSeenAt: string | null;
}

export interface Unread {
  total: number;
  conversations: { conversationId: string; unread: number }[];
}

/** `GET /web-config.json`. */
export interface WebConfig {
  url: string;
  anonKey: string;
}
