/**
 * React bindings (`realtime-messaging/react`): a provider holding the manager and hooks for
 * the documented examples. React is an optional peer dependency; only this entry imports it.
 *
 * ```tsx
 * <RealtimeProvider manager={manager}>
 *   <Chat conversationId={id} />
 * </RealtimeProvider>
 *
 * function Chat({ conversationId }: { conversationId: string }) {
 *   const { messages, send, typing, markRead } = useConversation(conversationId)
 *   const { onKeystroke, stop } = useTyping(conversationId)
 *   const { isOnline } = usePresence(conversationId)
 *   ...
 * }
 * ```
 */

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  type ReactElement,
  type ReactNode,
} from 'react'
import {
  parseTimestamp,
  participantOf,
  type MessageEvent,
  type PresenceEvent,
  type RejoinEvent,
  type TypingIndicatorEvent,
} from './events.js'
import type { Identity } from './identity.js'
import {
  getRealtimeManager,
  type RealtimeMessagingManager,
  type SendMessageOptions,
} from './manager.js'
import type { Subscription } from './subscription.js'
import { TypingHelper, type TypingHelperOptions } from './typing.js'

/** The manager the hooks use; without a provider, `getRealtimeManager()`. */
export const RealtimeContext = createContext<RealtimeMessagingManager | null>(null)

export interface RealtimeProviderProps {
  /** Default: `getRealtimeManager()`. */
  manager?: RealtimeMessagingManager
  children?: ReactNode
}

export function RealtimeProvider({ manager, children }: RealtimeProviderProps): ReactElement {
  return createElement(RealtimeContext.Provider, { value: manager ?? getRealtimeManager() }, children)
}

export function useRealtimeManager(): RealtimeMessagingManager {
  return useContext(RealtimeContext) ?? getRealtimeManager()
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/** Add or replace messages by id, keeping them oldest first (stable for equal times). */
function mergeMessages(current: readonly MessageEvent[], incoming: readonly MessageEvent[]): MessageEvent[] {
  const byId = new Map(current.map((message) => [message.id, message]))
  for (const message of incoming) byId.set(message.id, { ...byId.get(message.id), ...message })
  return [...byId.values()].sort((a, b) => parseTimestamp(a.createdAt) - parseTimestamp(b.createdAt))
}

/** Who is typing, keyed by participant, from typing events (stopped ones removed). */
function applyTyping(
  current: ReadonlyMap<string, TypingIndicatorEvent>,
  event: TypingIndicatorEvent,
): Map<string, TypingIndicatorEvent> {
  const next = new Map(current)
  const key = participantOf(event) ?? event.id
  if (event.isTyping) next.set(key, event)
  else next.delete(key)
  return next
}

/** This user's identity once known (null until then). */
function useIdentity(manager: RealtimeMessagingManager): Identity | null {
  const [identity, setIdentity] = useState<Identity | null>(null)
  useEffect(() => {
    let active = true
    manager.getIdentity().then(
      (found) => active && setIdentity(found),
      () => {},
    )
    return () => {
      active = false
    }
  }, [manager])
  return identity
}

export interface ConversationState {
  /** History (the latest page) and live messages, oldest first. */
  messages: MessageEvent[]
  /** Who is typing now, other than this user. */
  typing: TypingIndicatorEvent[]
  loading: boolean
  /** The last error (loading, the subscription); cleared by nothing, shown by the caller. */
  error: Error | null
  send(content: string, options?: SendMessageOptions): Promise<MessageEvent>
  /** Mark read the given messages, by default every loaded one from the other side. */
  markRead(messageIds?: readonly string[]): Promise<void>
}

/** A conversation's messages, live, with who is typing, sending and marking read. */
export function useConversation(conversationId: string): ConversationState {
  const manager = useRealtimeManager()
  const identity = useIdentity(manager)
  const [messages, setMessages] = useState<MessageEvent[]>([])
  const [typing, setTyping] = useState<Map<string, TypingIndicatorEvent>>(() => new Map())
  const [loading, setLoading] = useState(true)
  const [error, setError] = useState<Error | null>(null)
  const marked = useRef(new Set<string>())
  const latest = useRef<MessageEvent[]>(messages)
  latest.current = messages

  useEffect(() => {
    let active = true
    setMessages([])
    setTyping(new Map())
    setLoading(true)
    setError(null)
    marked.current = new Set()
    const subscription = manager.subscribeToConversation(conversationId, {
      onMessage: (message) => {
        if (active) setMessages((current) => mergeMessages(current, [message]))
      },
      onTyping: (event) => {
        if (active) setTyping((current) => applyTyping(current, event))
      },
      onDeliveryStatus: (event) => {
        if (!active) return
        setMessages((current) =>
          current.map((m) => (m.id === event.messageId ? { ...m, deliveryStatus: event.status } : m)),
        )
      },
      onRejoin: (event) => {
        // Changes were lost while disconnected: read the latest page again.
        if (active && !event.complete) void load(true)
      },
      onError: (failure) => {
        if (active) setError(failure)
      },
    })
    // The first page yields to live events that came before it; a page read again after a
    // lost history is the newer truth (delivery status included).
    const load = (again: boolean): Promise<void> =>
      manager
        .getMessages(conversationId)
        .then((page) => {
          if (!active) return
          setMessages((current) =>
            again ? mergeMessages(current, page.messages) : mergeMessages(page.messages, current),
          )
        })
        .catch((failure: unknown) => {
          if (active) setError(asError(failure))
        })
    void load(false).finally(() => {
      if (active) setLoading(false)
    })
    return () => {
      active = false
      void subscription.unsubscribe()
    }
  }, [manager, conversationId])

  const send = useCallback(
    async (content: string, options?: SendMessageOptions) => {
      const message = await manager.sendMessage(conversationId, content, options)
      setMessages((current) => mergeMessages(current, [message]))
      return message
    },
    [manager, conversationId],
  )

  const markRead = useCallback(
    async (messageIds?: readonly string[]) => {
      let ids = messageIds
      if (ids === undefined) {
        const me = await manager.getIdentity()
        const other = me.kind === 'staff' ? 'customer' : 'staff'
        ids = latest.current.filter((m) => m.senderType === other).map((m) => m.id)
      }
      // Each receipt counts against the read-receipt limit: never mark one twice.
      const fresh = ids.filter((id) => !marked.current.has(id))
      for (let i = 0; i < fresh.length; i += 500) {
        const batch = fresh.slice(i, i + 500)
        await manager.markMessagesAsRead(batch)
        for (const id of batch) marked.current.add(id)
      }
    },
    [manager],
  )

  const mine = identity?.userId ?? identity?.customerId
  const others = [...typing.values()].filter((event) => participantOf(event) !== mine)
  return { messages, typing: others, loading, error, send, markRead }
}

export interface TypingState {
  /** The ids (user or customer) of the others typing now. */
  typingUsers: string[]
  /** Call on every keystroke: starts, refreshes and stops this user's indicator. */
  onKeystroke: () => void
  /** Stop this user's indicator now (blur, submit). */
  stop: () => void
}

/** Typing in a conversation: who else types, and this user's indicator from keystrokes. */
export function useTyping(conversationId: string, options?: TypingHelperOptions): TypingState {
  const manager = useRealtimeManager()
  const identity = useIdentity(manager)
  const [typing, setTyping] = useState<Map<string, TypingIndicatorEvent>>(() => new Map())
  const helper = useRef<TypingHelper | null>(null)
  const settings = useRef(options)
  settings.current = options

  useEffect(() => {
    let active = true
    setTyping(new Map())
    const own = new TypingHelper(manager, conversationId, settings.current)
    helper.current = own
    const subscription = manager.subscribeToConversation(conversationId, {
      onTyping: (event) => {
        if (active) setTyping((current) => applyTyping(current, event))
      },
    })
    return () => {
      active = false
      helper.current = null
      void own.close()
      void subscription.unsubscribe()
    }
  }, [manager, conversationId])

  const onKeystroke = useCallback(() => helper.current?.keystroke(), [])
  const stop = useCallback(() => helper.current?.stop(), [])
  const mine = identity?.userId ?? identity?.customerId
  const typingUsers = [...typing.keys()].filter((id) => id !== mine)
  return { typingUsers, onKeystroke, stop }
}

export interface PresenceState {
  /** The conversation's participants with their status. */
  presence: PresenceEvent[]
  isOnline: (userOrCustomerId: string) => boolean
}

/** Presence in a conversation; joining it makes this user present there too. */
export function usePresence(conversationId: string): PresenceState {
  const manager = useRealtimeManager()
  const [presence, setPresence] = useState<PresenceEvent[]>([])

  useEffect(() => {
    let active = true
    const refresh = (): void => {
      if (active) setPresence(manager.getPresence(conversationId))
    }
    const subscription = manager.subscribeToPresence(conversationId, null, null, { onPresence: refresh })
    refresh()
    return () => {
      active = false
      void subscription.unsubscribe()
    }
  }, [manager, conversationId])

  const isOnline = useCallback(
    (id: string) => presence.some((p) => participantOf(p) === id && p.status === 'online'),
    [presence],
  )
  return { presence, isOnline }
}

/**
 * This user's unread messages, all conversations: fetched, then again whenever a message or a
 * read receipt arrives on their own messages topic.
 */
export function useUnreadCount(): number {
  const manager = useRealtimeManager()
  const [count, setCount] = useState(0)

  useEffect(() => {
    let active = true
    let subscription: Subscription | null = null
    let inFlight = false
    let again = false
    const refresh = async (): Promise<void> => {
      if (inFlight) {
        again = true // a burst of events: one more request after this one
        return
      }
      inFlight = true
      try {
        do {
          again = false
          const total = await manager.getUnreadCount()
          if (active) setCount(total)
        } while (again && active)
      } catch {
        // the next event tries again
      } finally {
        inFlight = false
      }
    }
    void refresh()
    manager.getIdentity().then(
      (me) => {
        if (!active) return
        // After a rejoin that lost changes, the replay cannot tell: count again.
        const onRejoin = (event: RejoinEvent): Promise<void> | undefined =>
          event.complete ? undefined : refresh()
        const handlers = { onMessage: refresh, onReadReceipt: refresh, onRejoin }
        if (me.kind === 'staff' && me.userId) {
          subscription = manager.subscribeToStaffMessages(me.userId, handlers)
        } else if (me.customerId) {
          subscription = manager.subscribeToCustomerMessages(me.customerId, handlers)
        }
      },
      () => {},
    )
    return () => {
      active = false
      void subscription?.unsubscribe()
    }
  }, [manager])

  return count
}
