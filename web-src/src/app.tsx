/**
 * The signed-in page, shared by the staff inbox and the customer chat: the conversation list
 * (live unread counts, last message, the other side's presence and typing) and the open
 * conversation. On a narrow screen the two stack: the list, then the conversation.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { messageOf, statusOf } from './api.ts';
import { ConnectionBanner } from './components/ConnectionBanner.tsx';
import { ConversationList, type ListEntry } from './components/ConversationList.tsx';
import { ConversationView } from './components/ConversationView.tsx';
import { ChatIcon } from './components/Icons.tsx';
import { presenceText, type PresenceInfo } from './components/Presence.tsx';
import { QueueButtons, StatusFilter } from './components/Queues.tsx';
import { SearchBox, SearchResults } from './components/Search.tsx';
import { StartConversation } from './components/StartConversation.tsx';
import { PRESENCE_OF_MOST, type LiveConversation, type LiveConversationRow, type LiveMessage, type LiveSubscription } from './live.ts';
import type { Session } from './sessionTypes.ts';
import type { Conversation, ConversationCounts, HistoryMessage, ListFilter, PresenceRow, SenderType } from './types.ts';
import { debounce, shortId } from './util.ts';

const PAGE = 30;
const DETAIL_CONCURRENCY = 4;
const PRESENCE_REFRESH_MS = 60_000;
/**
 * The counts follow the changes that move them (messages, reads, conversation changes); this
 * poll is only the fallback for what no event announces (docs/web.md "Queues").
 */
const COUNTS_REFRESH_MS = 60_000;

/** Whether a conversation belongs in the list under the staff user's filter. */
function matches(conversation: Conversation, filter: ListFilter | null, userId: string | null, theirs: boolean): boolean {
  if (!filter) return true;
  if (conversation.status !== filter.status) return false;
  if (filter.queue === 'mine') return conversation.assignedUserId === userId;
  if (filter.queue === 'unassigned') return conversation.assignedUserId === null;
  if (filter.queue === 'unread') return theirs; // a message of the other side, not read yet
  return true;
}

/** A list entry with the fields a conversation change carries. */
function withRow(conversation: Conversation, row: LiveConversationRow): Conversation {
  return {
    ...conversation,
    subject: row.subject,
    status: row.status,
    assignedUserId: row.assignedUserId,
    updatedAt: row.updatedAt,
  };
}

interface LastMessage {
  content: string;
  senderType: SenderType;
  createdAt: string;
}

/** The customer's name, or "Customer 3f2a9c" when the server gives none. */
/** What a list says of a conversation's latest message, which may have no text of its own. */
function lastText(message: { content: string; deletedAt?: string | null; attachments?: unknown[] }): string {
  if (message.deletedAt) return 'Message deleted';
  return message.content || (message.attachments && message.attachments.length > 0 ? 'Sent a file' : '');
}

function customerLabel(conversation: Conversation, otherLabel: string): string {
  return conversation.customerName || `${otherLabel} ${shortId(conversation.customerId)}`;
}

function isWide(): boolean {
  return window.matchMedia('(min-width: 721px)').matches;
}

async function eachLimited<T>(items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next]!;
      next += 1;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function customerTitle(conversation: Conversation): string {
  if (conversation.subject) return conversation.subject;
  const date = new Date(conversation.createdAt);
  return Number.isNaN(date.getTime())
    ? 'Conversation'
    : `Conversation of ${date.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' })}`;
}

/** The agents' presence as the customer sees it: online if any is. */
function agentsPresence(ids: string[], presence: Record<string, PresenceInfo>): PresenceInfo | null {
  const rows = ids.map((id) => presence[id]).filter((p): p is PresenceInfo => p !== undefined);
  if (rows.length === 0) return null;
  const online = rows.find((p) => p.status === 'online');
  if (online) return online;
  const away = rows.find((p) => p.status === 'away');
  if (away) return away;
  return rows.reduce((a, b) => ((a.lastSeenAt ?? '') >= (b.lastSeenAt ?? '') ? a : b));
}

export function ChatApp({ session }: { session: Session }) {
  const { api, manager, hub, me, side, connection, reads } = session;
  const staff = side === 'staff';
  const appTitle = staff ? 'Inbox' : 'Support';
  const otherLabel = staff ? 'Customer' : 'Agent';

  const [conversations, setConversations] = useState<Conversation[]>([]);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [loadingMore, setLoadingMore] = useState(false);
  const [listError, setListError] = useState<string | null>(null);
  const [lastMessages, setLastMessages] = useState<Record<string, LastMessage>>({});
  const [unread, setUnread] = useState<Record<string, number>>({});
  const [unreadTotal, setUnreadTotal] = useState(0);
  const [presence, setPresence] = useState<Record<string, PresenceInfo>>({});
  const [agents, setAgents] = useState<Record<string, string[]>>({}); // conversation -> staff ids
  const [listTyping, setListTyping] = useState<Record<string, boolean>>({});
  const [selectedId, setSelectedId] = useState<string | null>(session.memory.selectedId);
  const [pane, setPane] = useState<'list' | 'conversation'>(session.memory.selectedId ? 'conversation' : 'list');
  const [focusTarget, setFocusTarget] = useState<'composer' | 'heading' | null>(null);
  const [starting, setStarting] = useState(false);
  const [generation, setGeneration] = useState(0);
  const [filter, setFilter] = useState<ListFilter | null>(staff ? { queue: 'all', status: 'open' } : null);
  const [counts, setCounts] = useState<ConversationCounts | null>(null);
  const [query, setQuery] = useState('');
  /** Conversations opened from elsewhere than the list (search results, or a list since filtered). */
  const [opened, setOpened] = useState<Record<string, Conversation>>({});
  const [highlight, setHighlight] = useState<string | null>(null);
  const filterRef = useRef(filter);
  filterRef.current = filter;
  const fetching = useRef(new Set<string>());
  /** The last change of each conversation being fetched, applied to what the fetch returns. */
  const changedWhileFetching = useRef(new Map<string, LiveConversation>());
  const typingTimers = useRef(new Map<string, ReturnType<typeof setTimeout>>());

  const expiredOr = useCallback(
    (error: unknown, otherwise: () => void) => {
      if (statusOf(error) === 401) session.expired(error);
      else otherwise();
    },
    [session],
  );

  const notePresence = useCallback((rows: PresenceRow[]) => {
    setPresence((old) => {
      const next = { ...old };
      for (const row of rows) {
        const id = row.customerId ?? row.userId;
        if (id) next[id] = { status: row.status, lastSeenAt: row.lastSeenAt };
      }
      return next;
    });
  }, []);

  const noteLast = useCallback((conversationId: string, message: LastMessage) => {
    setLastMessages((old) => {
      const current = old[conversationId];
      if (current && current.createdAt > message.createdAt) return old;
      return { ...old, [conversationId]: message };
    });
  }, []);

  const noteAgents = useCallback((conversationId: string, ids: string[]) => {
    if (ids.length === 0) return;
    setAgents((old) => {
      const current = old[conversationId] ?? [];
      const merged = [...new Set([...current, ...ids])];
      return merged.length === current.length ? old : { ...old, [conversationId]: merged };
    });
  }, []);

  /** The last message and the participants' presence of each conversation of a page. */
  const loadDetails = useCallback(
    async (items: Conversation[]) => {
      await eachLimited(items, DETAIL_CONCURRENCY, async (conversation) => {
        try {
          // The list carries each conversation's latest message; older servers did not.
          const [last, rows] = await Promise.all([
            conversation.lastMessage !== undefined
              ? conversation.lastMessage
              : api.messages(conversation.id, 1).then((page): HistoryMessage | undefined => page.items[0]),
            api.presence(conversation.id),
          ]);
          if (last) noteLast(conversation.id, { ...last, content: lastText(last) });
          notePresence(rows);
          const staffIds = rows.map((r) => r.userId).filter((id): id is string => Boolean(id));
          if (conversation.assignedUserId) staffIds.push(conversation.assignedUserId);
          noteAgents(conversation.id, staffIds);
        } catch (error) {
          if (statusOf(error) === 401) session.expired(error);
          // Otherwise the entry shows without them; live events fill in.
        }
      });
    },
    [api, noteLast, notePresence, noteAgents, session],
  );

  const refreshUnread = useMemo(
    () =>
      debounce(300, () => {
        api
          .unread()
          .then((data) => {
            setUnreadTotal(data.total);
            const map: Record<string, number> = {};
            for (const c of data.conversations) map[c.conversationId] = c.unread;
            setUnread(map);
          })
          .catch((error: unknown) => expiredOr(error, () => undefined));
      }),
    [api, expiredOr],
  );
  useEffect(() => () => refreshUnread.cancel(), [refreshUnread]);

  // The queues' counts: again (coalesced) when a change that can move one arrives.
  const countsStatus = filter?.status ?? null;
  const refreshCounts = useMemo(
    () =>
      debounce(1000, () => {
        if (countsStatus === null) return;
        api
          .counts(countsStatus)
          .then(setCounts)
          .catch((error: unknown) => expiredOr(error, () => undefined));
      }),
    [api, expiredOr, countsStatus],
  );
  useEffect(() => {
    if (countsStatus === null) return undefined;
    api
      .counts(countsStatus)
      .then(setCounts)
      .catch((error: unknown) => expiredOr(error, () => undefined));
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') refreshCounts();
    }, COUNTS_REFRESH_MS);
    return () => {
      clearInterval(timer);
      refreshCounts.cancel();
    };
  }, [api, countsStatus, refreshCounts, generation]);

  // The first page of conversations.
  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    setListError(null);
    api
      .conversations(PAGE, null, filter)
      .then((page) => {
        if (cancelled) return;
        setConversations(page.items);
        setNextCursor(page.nextCursor);
        setLoading(false);
        if (!staff && page.items.length > 0) {
          // A customer goes straight into their latest conversation.
          setSelectedId((current) => current ?? page.items[0]!.id);
          setPane('conversation');
        }
        void loadDetails(page.items);
      })
      .catch((error: unknown) => {
        if (cancelled) return;
        expiredOr(error, () => {
          setLoading(false);
          setListError(`Conversations could not be loaded: ${messageOf(error)}`);
        });
      });
    refreshUnread();
    return () => {
      cancelled = true;
    };
  }, [api, generation, filter]);

  useEffect(() => {
    reads.onMarked = () => {
      refreshUnread();
      refreshCounts();
    };
    return () => {
      reads.onMarked = null;
    };
  }, [reads, refreshUnread, refreshCounts]);

  const loadMore = () => {
    if (!nextCursor || loadingMore) return;
    setLoadingMore(true);
    api
      .conversations(PAGE, nextCursor, filter)
      .then((page) => {
        setConversations((old) => [...old, ...page.items.filter((c) => !old.some((o) => o.id === c.id))]);
        setNextCursor(page.nextCursor);
        setLoadingMore(false);
        void loadDetails(page.items);
      })
      .catch((error: unknown) =>
        expiredOr(error, () => {
          setLoadingMore(false);
          setListError(`More conversations could not be loaded: ${messageOf(error)}`);
        }),
      );
  };

  const known = useRef<Conversation[]>([]);
  known.current = conversations;

  /** A message for a conversation the list does not have yet (new, or on a later page). */
  const fetchConversation = useCallback(
    (id: string, theirs: boolean) => {
      if (fetching.current.has(id) || known.current.some((c) => c.id === id)) return;
      fetching.current.add(id);
      api
        .conversation(id)
        .then((fetched) => {
          // A change that arrived meanwhile may be newer than what the server answered.
          const change = changedWhileFetching.current.get(id);
          if (change?.type === 'DELETE') return;
          const conversation = change ? withRow(fetched, change.conversation) : fetched;
          if (!matches(conversation, filterRef.current, me.userId, theirs)) return;
          setConversations((old) => (old.some((c) => c.id === id) ? old : [conversation, ...old]));
          void loadDetails([conversation]);
        })
        .catch((error: unknown) => expiredOr(error, () => undefined))
        .finally(() => {
          fetching.current.delete(id);
          changedWhileFetching.current.delete(id);
        });
    },
    [api, loadDetails, expiredOr, me.userId],
  );

  const unreadRef = useRef(unread);
  unreadRef.current = unread;

  /**
   * A conversation was created, changed (status, assignee) or deleted, here or elsewhere: its
   * entry follows, joins or leaves the list by the filter shown, and the counts are asked again.
   */
  const applyConversation = useCallback(
    (event: LiveConversation) => {
      const row = event.conversation;
      const id = row.id;
      refreshCounts();
      if (fetching.current.has(id)) changedWhileFetching.current.set(id, event);
      const deleted = event.type === 'DELETE';
      setOpened((old) => {
        const current = old[id];
        if (current === undefined) return old;
        if (deleted) {
          const { [id]: _gone, ...rest } = old;
          return rest;
        }
        return { ...old, [id]: withRow(current, row) };
      });
      const current = known.current.find((c) => c.id === id);
      if (deleted) {
        if (current) setConversations((old) => old.filter((c) => c.id !== id));
        return;
      }
      const theirs = (unreadRef.current[id] ?? 0) > 0;
      if (current === undefined) {
        // Not shown: fetched whole (customer name, last message) if it belongs in the list now.
        if (matches(row, filterRef.current, me.userId, theirs)) fetchConversation(id, theirs);
        return;
      }
      const updated = withRow(current, row);
      const keep = matches(updated, filterRef.current, me.userId, theirs);
      setConversations((old) => {
        if (!keep) return old.filter((c) => c.id !== id);
        // Back in the list (left it at a change an instant ago, before this render) or updated.
        return old.some((c) => c.id === id) ? old.map((c) => (c.id === id ? withRow(c, row) : c)) : [updated, ...old];
      });
    },
    [refreshCounts, fetchConversation, me.userId],
  );

  const setListTypist = useCallback((conversationId: string, isTyping: boolean) => {
    const timers = typingTimers.current;
    const old = timers.get(conversationId);
    if (old !== undefined) clearTimeout(old);
    timers.delete(conversationId);
    if (isTyping) timers.set(conversationId, setTimeout(() => setListTypist(conversationId, false), 6500));
    setListTyping((state) => (Boolean(state[conversationId]) === isTyping ? state : { ...state, [conversationId]: isTyping }));
  }, []);

  useEffect(() => {
    const timers = typingTimers.current;
    return () => {
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
    };
  }, []);

  const selectedRef = useRef(selectedId);
  selectedRef.current = selectedId;
  const titleOf = useCallback(
    (conversation: Conversation | undefined) =>
      conversation
        ? staff
          ? (conversation.subject ?? customerLabel(conversation, otherLabel))
          : customerTitle(conversation)
        : 'a conversation',
    [staff, otherLabel],
  );

  // Live events for the list.
  useEffect(
    () =>
      hub.listen({
        onMessage: (event: LiveMessage) => {
          if (event.change === 'DELETE') return;
          noteLast(event.conversationId, {
            content: lastText(event),
            senderType: event.senderType,
            createdAt: event.createdAt,
          });
          if (event.change !== 'UPDATE') refreshCounts();
          if (event.change !== 'UPDATE') fetchConversation(event.conversationId, event.senderType !== side);
          if (event.senderType !== side) {
            setListTypist(event.conversationId, false);
            refreshUnread();
            if (event.conversationId !== selectedRef.current && event.change !== 'UPDATE') {
              const conversation = known.current.find((c) => c.id === event.conversationId);
              session.announce(`New message in ${titleOf(conversation)}`);
            }
          }
          if (event.senderType === 'staff') noteAgents(event.conversationId, [event.senderId]);
        },
        onReadReceipt: (event) => {
          const mine = staff ? event.readByUserId === me.userId : event.readByCustomerId === me.customerId;
          if (mine) {
            refreshUnread();
            refreshCounts();
          }
        },
        onTyping: (event) => {
          const theirs = staff ? Boolean(event.customerId) : Boolean(event.userId);
          if (!theirs) return;
          setListTypist(event.conversationId, event.isTyping);
          if (event.userId) noteAgents(event.conversationId, [event.userId]);
        },
        onPresence: (event) => {
          const id = event.customerId ?? event.userId;
          if (!id) return;
          setPresence((old) => ({ ...old, [id]: { status: event.status, lastSeenAt: event.lastSeenAt } }));
        },
        onConversation: applyConversation,
      }),
    [hub, side, staff, me, noteLast, noteAgents, fetchConversation, refreshUnread, refreshCounts, setListTypist, session, titleOf, applyConversation],
  );

  // Subscriptions: the user's own messages topic always, the open conversation's topic (staff),
  // and a presence topic (staff see every presence row on it, a customer their agents').
  const track = useCallback(
    (subscription: LiveSubscription) => {
      const untrack = connection.track(subscription);
      return () => {
        untrack();
        try {
          Promise.resolve(subscription.unsubscribe()).catch((error: unknown) => console.debug('unsubscribe failed', error));
        } catch (error) {
          console.debug('unsubscribe failed', error);
        }
      };
    },
    [connection],
  );

  useEffect(() => {
    if (staff && me.userId) return track(manager.subscribeToStaffMessages(me.userId, hub.handlers));
    if (!staff && me.customerId) return track(manager.subscribeToCustomerMessages(me.customerId, hub.handlers));
    return undefined;
  }, [manager, hub, staff, me, track]);

  useEffect(() => {
    if (!staff || !selectedId) return undefined;
    return track(manager.subscribeToConversation(selectedId, hub.handlers));
  }, [manager, hub, staff, selectedId, track]);

  // Presence of the open conversation (joining it also makes this user present there).
  useEffect(() => {
    session.memory.selectedId = selectedId;
    if (!selectedId) return undefined;
    return track(
      manager.subscribeToPresence(
        selectedId,
        staff ? (me.userId ?? undefined) : undefined,
        staff ? undefined : (me.customerId ?? undefined),
        (event) => {
          hub.handlers.onPresence(event);
          if (event.userId && event.userId !== me.userId) noteAgents(selectedId, [event.userId]);
        },
      ),
    );
  }, [manager, hub, staff, me, selectedId, track, noteAgents, session]);

  // The list's presence, live (the channel above covers the open conversation only): for staff
  // the customers of the list, for a customer the agents of their conversations (the server lets
  // a customer follow the staff of their own conversations, as of the subscription's join). One
  // subscription per set shown, the first PRESENCE_OF_MOST (the server's bound on one filter's
  // values); the key is sorted, so a conversation moving up the list is no new set, and a new
  // agent is (a new join, which the server authorizes again).
  const listPresence = useMemo(() => {
    const ids = staff ? conversations.map((c) => c.customerId) : conversations.flatMap((c) => agents[c.id] ?? []);
    return [...new Set(ids)].slice(0, PRESENCE_OF_MOST).sort().join(',');
  }, [staff, conversations, agents]);
  useEffect(() => {
    if (!listPresence) return undefined;
    const ids = listPresence.split(',');
    return track(
      staff
        ? manager.subscribeToCustomersPresence(ids, hub.handlers.onPresence)
        : manager.subscribeToStaffPresence(ids, hub.handlers.onPresence),
    );
  }, [manager, hub, staff, listPresence, track]);

  // The list's presence again every minute while the page is visible, a fallback only: a change
  // between a conversation's first read and the subscription's join is no event.
  useEffect(() => {
    const timer = setInterval(() => {
      if (document.visibilityState !== 'visible') return;
      void eachLimited(known.current.slice(0, PAGE), 2, async (conversation) => {
        try {
          notePresence(await api.presence(conversation.id));
        } catch (error) {
          if (statusOf(error) === 401) session.expired(error);
        }
      });
    }, PRESENCE_REFRESH_MS);
    return () => clearInterval(timer);
  }, [api, notePresence, session]);

  // The unread total in the tab's title.
  useEffect(() => {
    document.title = unreadTotal > 0 ? `(${unreadTotal}) ${appTitle}` : appTitle;
  }, [unreadTotal, appTitle]);

  const activity = (conversation: Conversation) => {
    const last = lastMessages[conversation.id]?.createdAt;
    return last && last > conversation.createdAt ? last : conversation.createdAt;
  };

  const presenceOf = (conversation: Conversation): PresenceInfo | null =>
    staff ? (presence[conversation.customerId] ?? null) : agentsPresence(agents[conversation.id] ?? [], presence);

  const presenceLine = (conversation: Conversation): string => {
    const info = presenceOf(conversation);
    if (staff) return presenceText(info);
    if (info === null) return 'Waiting for an agent';
    return presenceText(info, 'Agent');
  };

  const subtitleOf = (conversation: Conversation): string | null => {
    const parts: string[] = [];
    if (staff && conversation.subject) parts.push(customerLabel(conversation, otherLabel));
    if (conversation.status !== 'open') parts.push(conversation.status);
    return parts.length > 0 ? parts.join(' · ') : null;
  };

  const sorted = [...conversations].sort((a, b) => (activity(b) > activity(a) ? 1 : activity(b) < activity(a) ? -1 : 0));
  const entries: ListEntry[] = sorted.map((conversation) => {
    const last = lastMessages[conversation.id];
    const mine = last && last.senderType === side;
    return {
      conversation,
      title: titleOf(conversation),
      subtitle: subtitleOf(conversation),
      preview: last ? `${mine ? 'You: ' : ''}${last.content || 'No text'}` : null,
      when: last?.createdAt ?? conversation.createdAt,
      unread: unread[conversation.id] ?? 0,
      typing: Boolean(listTyping[conversation.id]),
      presence: presenceOf(conversation),
      presenceText: presenceLine(conversation),
    };
  });

  // On a phone the conversation covers the list: the browser's Back returns to the list.
  const showConversationPane = () => {
    if (!isWide() && window.history.state?.rtmPane !== 'conversation') {
      window.history.pushState({ ...(window.history.state ?? {}), rtmPane: 'conversation' }, '');
    }
    setPane('conversation');
  };

  const showList = useCallback(() => {
    setPane('list');
    setStarting(false);
    requestAnimationFrame(() => {
      const button =
        document.querySelector<HTMLButtonElement>('.conv[aria-current="true"]') ??
        document.querySelector<HTMLButtonElement>('.conv');
      button?.focus();
    });
  }, []);

  useEffect(() => {
    const onPop = () => {
      if (window.history.state?.rtmPane !== 'conversation') showList();
    };
    window.addEventListener('popstate', onPop);
    return () => window.removeEventListener('popstate', onPop);
  }, [showList]);

  const select = (id: string, messageId: string | null = null) => {
    setStarting(false);
    setHighlight(messageId);
    setFocusTarget(isWide() ? 'composer' : 'heading');
    setSelectedId(id);
    showConversationPane();
  };

  const back = () => {
    if (window.history.state?.rtmPane === 'conversation') window.history.back(); // popstate shows the list
    else showList();
  };

  const started = (conversation: Conversation) => {
    setConversations((old) => [conversation, ...old.filter((c) => c.id !== conversation.id)]);
    setStarting(false);
    setFocusTarget('composer');
    setSelectedId(conversation.id);
    showConversationPane();
  };

  // The open conversation stays open when a filter leaves it out of the list.
  useEffect(() => {
    const current = conversations.find((c) => c.id === selectedId);
    if (current && opened[current.id] !== current) setOpened((old) => ({ ...old, [current.id]: current }));
  }, [conversations, selectedId]);

  /** A search result: its conversation, fetched when the list does not hold it. */
  const openResult = (conversationId: string, messageId: string) => {
    if (conversations.some((c) => c.id === conversationId) || opened[conversationId]) {
      select(conversationId, messageId);
      return;
    }
    api
      .conversation(conversationId)
      .then((conversation) => {
        setOpened((old) => ({ ...old, [conversation.id]: conversation }));
        void loadDetails([conversation]);
        select(conversation.id, messageId);
      })
      .catch((error: unknown) => expiredOr(error, () => setListError(`The conversation could not be opened: ${messageOf(error)}`)));
  };

  const titleById = (id: string): string => {
    const conversation = conversations.find((c) => c.id === id) ?? opened[id];
    return conversation ? titleOf(conversation) : staff ? 'Conversation' : 'Your conversation';
  };

  const selected = conversations.find((c) => c.id === selectedId) ?? (selectedId ? opened[selectedId] : undefined) ?? null;
  const showStart = !staff && !loading && !listError && (starting || conversations.length === 0);

  return (
    <div class="app">
      <a class="skip-link" href="#main">
        Skip to the conversation
      </a>
      <header class="topbar">
        <div class="brand">
          <ChatIcon />
          <h1>{appTitle}</h1>
          {unreadTotal > 0 && (
            <span class="badge badge-header">{unreadTotal} unread</span>
          )}
        </div>
        <div class="topbar-actions">
          <button type="button" class="btn btn-quiet" onClick={session.signOut}>
            Sign out
          </button>
        </div>
      </header>
      <ConnectionBanner connection={connection} />
      <div class="layout" data-pane={showStart ? 'conversation' : pane}>
        <ConversationList
          heading="Conversations"
          entries={entries}
          selectedId={selectedId}
          onSelect={select}
          loading={loading}
          error={listError}
          onRetry={() => setGeneration((g) => g + 1)}
          hasMore={nextCursor !== null}
          loadingMore={loadingMore}
          onLoadMore={loadMore}
          emptyText={
            filter && filter.queue !== 'all'
              ? 'No conversations here.'
              : filter && filter.status !== 'open'
                ? `No ${filter.status} conversations.`
                : 'No conversations yet.'
          }
          tools={
            <div class="list-tools">
              <div class="search-row">
                <SearchBox query={query} onQuery={setQuery} />
                {filter && <StatusFilter filter={filter} counts={counts} onChange={setFilter} />}
              </div>
              {filter && !query.trim() && <QueueButtons filter={filter} counts={counts} onChange={setFilter} />}
            </div>
          }
          replacement={
            query.trim() ? (
              <SearchResults
                api={api}
                query={query}
                side={side}
                otherLabel={otherLabel}
                titleOf={titleById}
                onOpen={openResult}
                onExpired={session.expired}
                openedId={highlight}
              />
            ) : null
          }
          action={
            staff ? null : (
              <button
                type="button"
                class="btn btn-quiet btn-small"
                onClick={() => {
                  setStarting(true);
                  showConversationPane();
                }}
              >
                New conversation
              </button>
            )
          }
        />
        <main id="main" class="main" tabIndex={-1}>
          {showStart ? (
            <StartConversation
              api={api}
              first={conversations.length === 0}
              onStarted={started}
              onCancel={conversations.length > 0 ? back : null}
              onExpired={session.expired}
            />
          ) : selected ? (
            <ConversationView
              key={selected.id}
              session={session}
              conversation={selected}
              title={titleOf(selected)}
              subtitle={subtitleOf(selected)}
              otherLabel={otherLabel}
              presence={presenceOf(selected)}
              presenceText={presenceLine(selected)}
              onBack={back}
              focusTarget={focusTarget}
              highlightId={highlight}
            />
          ) : (
            <div class="empty-main">
              <ChatIcon />
              <p>{loading ? 'Loading…' : staff ? 'Select a conversation to read and reply.' : 'Select a conversation.'}</p>
            </div>
          )}
        </main>
      </div>
    </div>
  );
}
