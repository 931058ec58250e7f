/**
 * The open conversation: its history (newest page first, older pages on demand), live messages,
 * the ✓ marks of the messages of this side, the other side's typing, and sending with a
 * `clientMessageId` (a retry never duplicates a message).
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { messageOf, statusOf } from './api.ts';
import type { LiveDeliveryStatus, LiveMessage, LiveReadReceipt, LiveTyping } from './live.ts';
import type { Session } from './sessionTypes.ts';
import type { Conversation, DeliveryState, FileAttachment, HistoryMessage, SenderType, UploadedFile } from './types.ts';
import { newId } from './util.ts';

export interface ChatMessage {
  /** Stable across the send: `c:<clientMessageId>` for messages sent from this page. */
  key: string;
  id: string | null;
  conversationId: string;
  content: string;
  senderType: SenderType;
  senderId: string;
  createdAt: string;
  clientMessageId: string | null;
  delivery: DeliveryState | null;
  /** The files sent with it (only the server's `file` attachments). */
  attachments: FileAttachment[];
  editedAt: string | null;
  /** A tombstone: deleted, without content or files. */
  deletedAt: string | null;
  sending?: 'sending' | 'failed';
  error?: string;
}

/** The `file` attachments of a message (free-form ones a back end stored are not shown). */
export function filesOf(attachments: unknown): FileAttachment[] {
  if (!Array.isArray(attachments)) return [];
  const files: FileAttachment[] = [];
  for (const item of attachments) {
    if (typeof item !== 'object' || item === null) continue;
    const a = item as Record<string, unknown>;
    if (a['type'] !== 'file' || typeof a['id'] !== 'string') continue;
    files.push({
      type: 'file',
      id: a['id'],
      filename: typeof a['filename'] === 'string' && a['filename'] ? a['filename'] : 'attachment',
      contentType: typeof a['contentType'] === 'string' ? a['contentType'] : 'application/octet-stream',
      size: typeof a['size'] === 'number' ? a['size'] : 0,
    });
  }
  return files;
}

const RANK: Record<DeliveryState, number> = { sent: 0, failed: 1, delivered: 2, read: 3 };

/** Delivery only moves forward (a failed message may still be delivered or read later). */
export function laterDelivery(a: DeliveryState | null, b: DeliveryState | null): DeliveryState | null {
  if (a === null) return b;
  if (b === null) return a;
  return RANK[b] >= RANK[a] ? b : a;
}

/**
 * A server time in microseconds since the epoch. `Date.parse` keeps milliseconds only, and the
 * messages of one multi-row insert (an import, a bot) lie microseconds apart: compared to the
 * millisecond, they fell back to their ids' random order.
 */
function micros(iso: string): number {
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? '';
  return Date.parse(iso) * 1000 + Number(fraction.padEnd(6, '0').slice(3, 6));
}

function compare(a: ChatMessage, b: ChatMessage): number {
  if (a.sending && !b.sending) return 1; // not yet on the server: after everything that is
  if (b.sending && !a.sending) return -1;
  const t = micros(a.createdAt) - micros(b.createdAt);
  if (t !== 0) return t;
  return (a.id ?? a.key) < (b.id ?? b.key) ? -1 : 1;
}

function fromServer(m: LiveMessage | HistoryMessage, delivery: DeliveryState | null): ChatMessage {
  return {
    key: m.id,
    id: m.id,
    conversationId: m.conversationId,
    content: m.content,
    senderType: m.senderType,
    senderId: m.senderId,
    createdAt: m.createdAt,
    clientMessageId: m.clientMessageId ?? null,
    delivery,
    attachments: m.deletedAt ? [] : filesOf(m.attachments),
    editedAt: m.editedAt ?? null,
    deletedAt: m.deletedAt ?? null,
  };
}

/** What is known of one message, from two versions of it: a delete or a later edit is never undone. */
function newer(old: ChatMessage, incoming: ChatMessage): ChatMessage {
  if (old.deletedAt && !incoming.deletedAt) {
    return { ...incoming, content: '', attachments: [], deletedAt: old.deletedAt, editedAt: old.editedAt };
  }
  if (!incoming.deletedAt && old.editedAt && (!incoming.editedAt || incoming.editedAt < old.editedAt)) {
    return { ...incoming, content: old.content, editedAt: old.editedAt };
  }
  return incoming;
}

/** Insert or update a message from the server; a local message with its clientMessageId becomes it. */
export function merge(list: ChatMessage[], incoming: ChatMessage): ChatMessage[] {
  const byId = incoming.id === null ? -1 : list.findIndex((m) => m.id === incoming.id);
  const byClient =
    incoming.clientMessageId === null
      ? -1
      : list.findIndex((m) => m.id === null && m.clientMessageId === incoming.clientMessageId && m.senderId === incoming.senderId);
  let next = list;
  if (byId >= 0) {
    const old = list[byId]!;
    next = list.slice();
    next[byId] = { ...newer(old, incoming), key: old.key, delivery: laterDelivery(old.delivery, incoming.delivery) };
    if (byClient >= 0) next.splice(byClient, 1);
  } else if (byClient >= 0) {
    const old = list[byClient]!;
    next = list.slice();
    next[byClient] = { ...incoming, key: old.key, delivery: laterDelivery(old.delivery, incoming.delivery) };
  } else {
    next = [...list, incoming];
  }
  return next.slice().sort(compare);
}

interface State {
  messages: ChatMessage[];
  nextCursor: string | null;
  loading: boolean;
  loadingOlder: boolean;
  error: string | null;
  /** The history's read state is known: marking on screen may start. */
  readable: boolean;
}

const EMPTY: State = { messages: [], nextCursor: null, loading: true, loadingOlder: false, error: null, readable: false };

export interface ConversationModel extends State {
  /** Ids of the other side who are typing now. */
  typing: string[];
  send(content: string, files?: UploadedFile[]): void;
  /** Edit one's own message; rejects with the server's refusal. */
  edit(id: string, content: string): Promise<void>;
  /** Delete a message (a tombstone stays); rejects with the server's refusal. */
  remove(id: string): Promise<void>;
  retry(key: string): void;
  loadOlder(): void;
  reload(): void;
  /** Whether a message should be marked read when it is on screen. */
  needsRead(message: ChatMessage): boolean;
}

export function useConversation(session: Session, conversation: Conversation, otherLabel: string): ConversationModel {
  const { api, manager, hub, me, side, reads } = session;
  const conversationId = conversation.id;
  const myId = side === 'staff' ? me.userId : me.customerId;
  const [state, setState] = useState<State>(EMPTY);
  const [typing, setTyping] = useState<string[]>([]);
  const typingTimers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const early = useRef(new Map<string, DeliveryState>()); // delivery events ahead of their message
  const [generation, setGeneration] = useState(0);
  const latest = useRef(state);
  latest.current = state;
  const announced = useRef(new Set<string>());
  /** Messages this page is editing or deleting right now (not announced back to it). */
  const changing = useRef(new Set<string>());

  // History: the newest page, then whether anything in it is still unread for this reader.
  useEffect(() => {
    let cancelled = false;
    setState(EMPTY);
    early.current.clear();
    (async () => {
      try {
        const page = await api.messages(conversationId, 50);
        if (cancelled) return;
        const messages = page.items.map((m) => fromServer(m, m.delivery?.status ?? null)).sort(compare);
        setState((s) => ({
          ...s,
          // Live messages that came while loading stay.
          messages: s.messages.reduce((list, m) => merge(list, m), messages),
          nextCursor: page.nextCursor,
          loading: false,
          error: null,
        }));
        const theirs = messages.filter((m) => m.senderType !== side && m.id !== null);
        // What the delivery row says is read, when this reader is the recipient.
        const recipientIsMe = side === 'customer' || conversation.assignedUserId === me.userId;
        if (recipientIsMe) reads.known(theirs.filter((m) => m.delivery === 'read').map((m) => m.id!));
        // Nothing unread now means everything loaded before now is read.
        const unread = await api.unread(conversationId);
        if (cancelled) return;
        const here = unread.conversations.find((c) => c.conversationId === conversationId)?.unread ?? 0;
        if (here === 0) reads.known(theirs.map((m) => m.id!));
        setState((s) => ({ ...s, readable: true }));
      } catch (error) {
        if (cancelled) return;
        setState((s) => ({ ...s, readable: true }));
        if (statusOf(error) === 401) {
          session.expired(error);
          return;
        }
        setState((s) => ({ ...s, loading: false, error: `The conversation could not be loaded: ${messageOf(error)}` }));
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [conversationId, generation]);

  // The other side's typing ends by itself at its expiry, should the stop never come.
  const setTypist = useCallback((id: string, isTyping: boolean, expiresAt?: string) => {
    const timers = typingTimers.current;
    const old = timers.get(id);
    if (old !== undefined) clearTimeout(old);
    timers.delete(id);
    if (isTyping) {
      const until = expiresAt ? Date.parse(expiresAt) - Date.now() : 5000;
      const ms = Math.min(Math.max(Number.isFinite(until) ? until : 5000, 1000), 6000) + 500;
      timers.set(
        id,
        setTimeout(() => setTypist(id, false), ms),
      );
    }
    setTyping([...timers.keys()]);
  }, []);

  useEffect(() => {
    const timers = typingTimers.current;
    return () => {
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      setTyping([]);
    };
  }, [conversationId]);

  // Live events of this conversation.
  useEffect(
    () =>
      hub.listen({
        onMessage: (event: LiveMessage) => {
          if (event.conversationId !== conversationId) return;
          if (event.change === 'DELETE') {
            setState((s) => ({ ...s, messages: s.messages.filter((m) => m.id !== event.id) }));
            return;
          }
          const delivery = early.current.get(event.id) ?? null;
          const old = latest.current.messages.find((m) => m.id === event.id);
          const isNew = old === undefined && !announced.current.has(event.id);
          setState((s) => ({ ...s, messages: merge(s.messages, fromServer(event, delivery)) }));
          if (event.change === 'UPDATE' && old !== undefined) {
            // Someone else's edit or delete, in words for screen readers (not this page's own).
            if (event.deletedAt && !old.deletedAt && !changing.current.has(event.id)) {
              session.announce(event.senderType === side ? 'Your message was deleted' : `${otherLabel} deleted a message`);
            } else if (!event.deletedAt && event.editedAt && event.editedAt !== old.editedAt && event.senderType !== side) {
              session.announce(`${otherLabel} edited a message: ${event.content}`);
            }
            return;
          }
          if (event.senderType !== side) {
            setTypist(event.senderId, false); // sending ends typing
            if (isNew && event.change !== 'UPDATE') {
              announced.current.add(event.id);
              session.announce(`${otherLabel}: ${event.content || 'sent a file'}`);
            }
          }
        },
        onDeliveryStatus: (event: LiveDeliveryStatus) => {
          // Kept for a message not shown yet (its send is still being answered, or its event
          // comes later); the staff topic carries every conversation's, hence the bound.
          const early_ = early.current;
          early_.set(event.messageId, laterDelivery(early_.get(event.messageId) ?? null, event.status) ?? event.status);
          if (early_.size > 500) early_.delete(early_.keys().next().value!);
          setState((s) =>
            s.messages.some((m) => m.id === event.messageId)
              ? {
                  ...s,
                  messages: s.messages.map((m) =>
                    m.id === event.messageId ? { ...m, delivery: laterDelivery(m.delivery, event.status) } : m,
                  ),
                }
              : s,
          );
        },
        onReadReceipt: (event: LiveReadReceipt) => {
          const byOtherSide = side === 'staff' ? Boolean(event.readByCustomerId) : Boolean(event.readByUserId);
          const byMe = side === 'staff' ? event.readByUserId === myId : event.readByCustomerId === myId;
          if (byMe) reads.known([event.messageId]);
          if (!byOtherSide) return;
          setState((s) =>
            s.messages.some((m) => m.id === event.messageId && m.senderType === side)
              ? {
                  ...s,
                  messages: s.messages.map((m) => (m.id === event.messageId ? { ...m, delivery: 'read' } : m)),
                }
              : s,
          );
        },
        onTyping: (event: LiveTyping) => {
          if (event.conversationId !== conversationId) return;
          const who = side === 'staff' ? event.customerId : event.userId;
          if (!who) return; // this side's own typing (or a colleague's)
          setTypist(who, event.isTyping, event.expiresAt);
        },
      }),
    [hub, conversationId, side, myId, otherLabel, setTypist, reads, session],
  );

  const deliver = useCallback(
    (local: ChatMessage) => {
      manager
        .sendMessage(conversationId, local.content, {
          clientMessageId: local.clientMessageId!,
          ...(local.attachments.length > 0 ? { attachmentIds: local.attachments.map((a) => a.id) } : {}),
        })
        .then((sent) => {
          const delivery = early.current.get(sent.id) ?? 'sent';
          setState((s) => ({ ...s, messages: merge(s.messages, { ...fromServer(sent, delivery), key: local.key }) }));
        })
        .catch((error: unknown) => {
          if (statusOf(error) === 401) {
            session.expired(error);
            return;
          }
          const reason = statusOf(error) === 429 ? 'Too many messages, wait a moment' : messageOf(error);
          setState((s) => ({
            ...s,
            messages: s.messages.map((m) => (m.key === local.key ? { ...m, sending: 'failed', error: reason } : m)),
          }));
        });
    },
    [manager, conversationId, session],
  );

  const send = useCallback(
    (content: string, files: UploadedFile[] = []) => {
      const clientMessageId = newId();
      const local: ChatMessage = {
        key: `c:${clientMessageId}`,
        id: null,
        conversationId,
        content,
        senderType: side,
        senderId: myId ?? '',
        createdAt: new Date().toISOString(),
        clientMessageId,
        delivery: null,
        attachments: files.map((f) => ({ type: 'file', id: f.id, filename: f.filename, contentType: f.contentType, size: f.size })),
        editedAt: null,
        deletedAt: null,
        sending: 'sending',
      };
      setState((s) => ({ ...s, messages: [...s.messages, local] }));
      deliver(local);
    },
    [conversationId, side, myId, deliver],
  );

  const retry = useCallback(
    (key: string) => {
      const failed = latest.current.messages.find((m) => m.key === key && m.sending === 'failed');
      if (!failed) return;
      const again: ChatMessage = { ...failed, sending: 'sending' };
      delete again.error;
      setState((s) => ({ ...s, messages: s.messages.map((m) => (m.key === key ? again : m)) }));
      deliver(again);
    },
    [deliver],
  );

  const apply = useCallback((message: LiveMessage) => {
    setState((s) => ({ ...s, messages: merge(s.messages, fromServer(message, null)) }));
  }, []);

  const edit = useCallback(
    async (id: string, content: string) => {
      try {
        apply(await manager.editMessage(id, content));
      } catch (error) {
        if (statusOf(error) === 401) session.expired(error);
        throw error;
      }
    },
    [manager, apply, session],
  );

  const remove = useCallback(
    async (id: string) => {
      changing.current.add(id);
      try {
        apply(await manager.deleteMessage(id));
      } catch (error) {
        if (statusOf(error) === 401) session.expired(error);
        throw error;
      } finally {
        // Its own change may come back through the feed after the answer.
        setTimeout(() => changing.current.delete(id), 10_000);
      }
    },
    [manager, apply, session],
  );

  const loadOlder = useCallback(() => {
    const cursor = state.nextCursor;
    if (!cursor || state.loadingOlder) return;
    setState((s) => ({ ...s, loadingOlder: true }));
    api
      .messages(conversationId, 50, cursor)
      .then((page) => {
        setState((s) => ({
          ...s,
          messages: page.items.reduce((list, m) => merge(list, fromServer(m, m.delivery?.status ?? null)), s.messages),
          nextCursor: page.nextCursor,
          loadingOlder: false,
        }));
      })
      .catch((error: unknown) => {
        if (statusOf(error) === 401) session.expired(error);
        setState((s) => ({ ...s, loadingOlder: false, error: `Earlier messages could not be loaded: ${messageOf(error)}` }));
      });
  }, [api, conversationId, state.nextCursor, state.loadingOlder, session]);

  const needsRead = useCallback(
    (message: ChatMessage) =>
      state.readable && message.id !== null && message.senderType !== side && !reads.has(message.id),
    [side, reads, state.readable],
  );

  const reload = useCallback(() => setGeneration((g) => g + 1), []);

  return { ...state, typing, send, edit, remove, retry, loadOlder, reload, needsRead };
}
