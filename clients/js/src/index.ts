/**
 * realtime-messaging: the TypeScript client of the realtime-messaging server.
 *
 * ```ts
 * import { RealtimeMessagingManager } from 'realtime-messaging'
 *
 * const manager = new RealtimeMessagingManager('http://127.0.0.1:4000', ANON_KEY, { accessToken })
 * manager.subscribeToConversation(conversationId, { onMessage: (m) => console.log(m.content) })
 * await manager.sendMessage(conversationId, 'Hello')
 * ```
 */

export {
  PRESENCE_OF_MOST,
  RealtimeMessagingManager,
  configureRealtimeManager,
  getRealtimeManager,
  reconnectDelay,
  socketUrl,
} from './manager.js'
export type {
  MessagePage,
  RealtimeManagerConfig,
  RealtimeManagerOptions,
  SendMessageOptions,
  UploadedAttachment,
  UploadOptions,
} from './manager.js'
export type {
  ConversationCounts,
  ConversationEntry,
  ConversationFilters,
  ConversationPage,
  ConversationStatus,
  SearchOptions,
  SearchPage,
  SearchResult,
} from './search.js'
export { Subscription } from './subscription.js'
export type { SubscriptionHandlers } from './subscription.js'
export type { SubscriptionState } from './topic.js'
export {
  ApiError,
  ChannelClosedError,
  ChannelError,
  ConnectionLostError,
  HistoryLostError,
  JoinRefusedError,
  RealtimeError,
} from './errors.js'
export { eventFromChange, messageFromApi, parseTimestamp, presenceFromApi } from './events.js'
export type {
  Attachment,
  ChangeType,
  ConversationEvent,
  ConversationRow,
  DeliveryStatus,
  DeliveryStatusEvent,
  MessageEvent,
  PresenceEvent,
  PresenceStatus,
  ReadReceiptEvent,
  RealtimeEvent,
  RejoinEvent,
  SenderType,
  TypingIndicatorEvent,
} from './events.js'
export { identityOfToken } from './identity.js'
export type { Identity } from './identity.js'
export { RateBudget, TypingHelper } from './typing.js'
export type { TypingHelperOptions } from './typing.js'
