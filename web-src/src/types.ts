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
  lastMessage?: {
    content: string;
    senderType: SenderType;
    createdAt: string;
    deletedAt?: string | null;
    attachments?: unknown[];
  } | null;
}

export type ConversationStatus = 'open' | 'pending' | 'resolved' | 'closed';
export const STATUSES: readonly ConversationStatus[] = ['open', 'pending', 'resolved', 'closed'];

/** A file of a message, as the database fills it in from the upload (docs/files.md). */
export interface FileAttachment {
  type: 'file';
  id: string;
  filename: string;
  contentType: string;
  size: number;
}

/** `POST /api/conversations/{id}/attachments`. */
export interface UploadedFile {
  id: string;
  conversationId: string;
  filename: string;
  contentType: string;
  size: number;
}

/** `GET /api/conversations/counts?status`. */
export interface ConversationCounts {
  status: ConversationStatus;
  all: number;
  mine: number | null;
  unassigned: number;
  unread: number | null;
  byStatus: Record<ConversationStatus, number>;
}

/** The inbox's queue filter. */
export type Queue = 'all' | 'mine' | 'unassigned' | 'unread';

export interface ListFilter {
  queue: Queue;
  status: ConversationStatus;
}

/** One result of `GET /api/search`: `snippet` is HTML (escaped text, matches in `<mark>`). */
export interface SearchResult {
  messageId: string;
  conversationId: string;
  senderType: SenderType;
  senderId: string;
  createdAt: string;
  rank: number;
  snippet: string;
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
  editedAt?: string | null;
  deletedAt?: string | null;
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
