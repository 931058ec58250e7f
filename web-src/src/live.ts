/**
 * The realtime side: the TypeScript manager of clients/js (bundled in), and the part of its
 * API these pages use, written down as an interface so that the typecheck proves the two agree.
 */
import {
  ChannelError,
  ConnectionLostError,
  HistoryLostError,
  JoinRefusedError,
  PRESENCE_OF_MOST,
  RealtimeMessagingManager,
} from '../../clients/js/src/index.ts';
import type { DeliveryState, PresenceStatus, SenderType, UploadedFile, WebConfig } from './types.ts';

/** The most customers (or staff) one presence subscription follows (the server's bound). */
export { PRESENCE_OF_MOST };

export interface LiveMessage {
  id: string;
  conversationId: string;
  content: string;
  senderType: SenderType;
  senderId: string;
  createdAt: string;
  clientMessageId?: string | null;
  attachments?: Record<string, unknown>[];
  editedAt?: string | null;
  deletedAt?: string | null;
  change?: 'INSERT' | 'UPDATE' | 'DELETE';
}

export interface LiveReadReceipt {
  id: string;
  messageId: string;
  readByUserId?: string | null;
  readByCustomerId?: string | null;
  readAt: string;
  conversationId?: string;
}

export interface LiveTyping {
  id: string;
  conversationId: string;
  userId?: string | null;
  customerId?: string | null;
  isTyping: boolean;
  startedAt: string;
  expiresAt: string;
}

export interface LiveDeliveryStatus {
  id: string;
  messageId: string;
  status: DeliveryState;
  recipientType: SenderType;
  recipientId: string;
}

export interface LivePresence {
  id: string;
  userId?: string | null;
  customerId?: string | null;
  status: PresenceStatus;
  lastSeenAt: string;
}

/** A conversation's row as a change carries it (no customer name, no last message). */
export interface LiveConversationRow {
  id: string;
  customerId: string;
  subject: string | null;
  status: string;
  assignedUserId: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A conversation created, changed (status, assignee, subject) or deleted, by anyone. */
export interface LiveConversation {
  type: 'INSERT' | 'UPDATE' | 'DELETE';
  conversation: LiveConversationRow;
}

export interface LiveHandlers {
  onMessage?: (event: LiveMessage) => void;
  onReadReceipt?: (event: LiveReadReceipt) => void;
  onTyping?: (event: LiveTyping) => void;
  onDeliveryStatus?: (event: LiveDeliveryStatus) => void;
  onPresence?: (event: LivePresence) => void;
  onConversation?: (event: LiveConversation) => void;
  onError?: (error: unknown) => void;
}

export type SubscriptionState = 'joining' | 'joined' | 'errored' | 'leaving' | 'closed';

export interface LiveSubscription {
  readonly topic: string;
  readonly state: SubscriptionState;
  unsubscribe(): unknown;
}

/** What the pages call on the manager (and nothing else). */
export interface LiveManager {
  subscribeToStaffMessages(userId: string, handlers: LiveHandlers): LiveSubscription;
  subscribeToCustomerMessages(customerId: string, handlers: LiveHandlers): LiveSubscription;
  subscribeToConversation(conversationId: string, handlers: LiveHandlers): LiveSubscription;
  subscribeToPresence(
    conversationId: string,
    userId: string | undefined,
    customerId: string | undefined,
    onPresence: (event: LivePresence) => void,
  ): LiveSubscription;
  subscribeToCustomersPresence(customerIds: readonly string[], onPresence: (event: LivePresence) => void): LiveSubscription;
  subscribeToStaffPresence(userIds: readonly string[], onPresence: (event: LivePresence) => void): LiveSubscription;
  sendTypingIndicator(
    conversationId: string,
    userId: string | undefined,
    customerId: string | undefined,
    isTyping: boolean,
  ): Promise<unknown>;
  markMessagesAsRead(messageIds: string[]): Promise<unknown>;
  sendMessage(
    conversationId: string,
    content: string,
    options?: { clientMessageId?: string; attachmentIds?: string[] },
  ): Promise<LiveMessage>;
  editMessage(messageId: string, content: string): Promise<LiveMessage>;
  deleteMessage(messageId: string): Promise<LiveMessage>;
  uploadAttachment(conversationId: string, data: Blob, options?: { filename?: string; contentType?: string }): Promise<UploadedFile>;
  getAttachmentUrl(attachmentId: string): Promise<UploadedFile & { url: string; expiresAt: string }>;
  close(): Promise<unknown>;
}

/**
 * The server's URL for the manager: `url` of /web-config.json, unless the page was opened under
 * another name of the same server (http://localhost:4000 while the public URL says
 * http://127.0.0.1:4000). The page comes from that server, so its origin reaches it too, and
 * the manager's HTTP calls must stay same-origin: the server sends no CORS headers.
 */
export function serverUrl(configUrl: string, pageOrigin: string): string {
  let url: URL;
  try {
    url = new URL(configUrl, pageOrigin);
  } catch {
    return pageOrigin;
  }
  const path = url.pathname.replace(/\/+$/, '');
  if (url.origin !== pageOrigin) {
    console.info(`realtime-messaging: the server is ${url.origin}, this page ${pageOrigin}: using ${pageOrigin}`);
  }
  return pageOrigin + path;
}

/** A manager for this page's token; `onError` hears connection losses and refusals. */
export function createManager(config: WebConfig, token: string, onError: (error: unknown) => void): LiveManager {
  const url = serverUrl(config.url, window.location.origin);
  const manager: LiveManager = new RealtimeMessagingManager(url, config.anonKey, {
    accessToken: token,
    onError,
  });
  return manager;
}

/** What an error from the manager means for the page. */
export type ErrorKind =
  /** The socket dropped: the manager reconnects and resumes by itself. */
  | 'connection'
  /** The server reported an error on a channel, closed or refused it: perhaps the token expired or was revoked. */
  | 'channel'
  /** The outage outlasted the server's change retention: reload what is shown. */
  | 'history'
  | 'other';

export function kindOfError(error: unknown): ErrorKind {
  if (error instanceof ConnectionLostError) return 'connection';
  if (error instanceof HistoryLostError) return 'history';
  if (error instanceof ChannelError || error instanceof JoinRefusedError) return 'channel';
  return 'other';
}

/** The topic of a refused join, or null. */
export function refusedTopicOf(error: unknown): string | null {
  return error instanceof JoinRefusedError ? error.topic : null;
}
