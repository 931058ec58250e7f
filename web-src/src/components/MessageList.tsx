import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import { messageOf, statusOf } from '../api.ts';
import type { ChatMessage } from '../conversation.ts';
import type { LiveManager } from '../live.ts';
import type { SenderType } from '../types.ts';
import { classes, dayOf, fullWhen, timeOf } from '../util.ts';
import { Attachments } from './Attachments.tsx';

/** Pages of older history loaded, at most, to find a search result (50 messages each). */
const SEARCH_PAGES = 20;

interface Props {
  messages: ChatMessage[];
  side: SenderType;
  myId: string | null;
  /** "Customer" or "Agent": who the other side is. */
  otherLabel: string;
  loading: boolean;
  hasOlder: boolean;
  loadingOlder: boolean;
  onLoadOlder(): void;
  needsRead(message: ChatMessage): boolean;
  onSeen(messageId: string): void;
  onRetry(key: string): void;
  /** Resets scrolling: the conversation's id. */
  resetKey: string;
  manager: LiveManager;
  onExpired(error: unknown): void;
  onEdit(id: string, content: string): Promise<void>;
  onDelete(id: string): Promise<void>;
  /** A message to scroll to and mark once it is shown (a search result). */
  highlightId: string | null;
}

/** Why the server refused an edit or a delete, in words (docs/api.md "Editing and deleting"). */
function refusal(action: 'edit' | 'delete', error: unknown): string {
  const status = statusOf(error);
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  if (status === 403) {
    return action === 'edit'
      ? 'Only the sender can edit this message.'
      : 'You cannot delete this message: only its sender, or the agent handling the conversation, can.';
  }
  if (status === 404) return 'This message no longer exists.';
  if (code === 'edit_window_closed') {
    return action === 'edit' ? 'This message is too old to be edited.' : 'This message is too old to be deleted by its sender.';
  }
  if (code === 'message_deleted') return 'This message was deleted.';
  if (status === 413) return 'The message is too long.';
  if (status === 429) return 'Too many changes at once: wait a moment and try again.';
  return `The message could not be ${action === 'edit' ? 'edited' : 'deleted'}: ${messageOf(error)}`;
}

function EditForm({
  message,
  onSave,
  onCancel,
}: {
  message: ChatMessage;
  onSave(content: string): Promise<void>;
  onCancel(): void;
}) {
  const [text, setText] = useState(message.content);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const box = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
  }, []);
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 200)}px`;
  }, [text]);
  const save = () => {
    const content = text.trim();
    if (!content || busy) return;
    if (content === message.content) {
      onCancel();
      return;
    }
    setBusy(true);
    setError(null);
    onSave(content)
      .then(() => onCancel())
      .catch((e: unknown) => {
        setBusy(false);
        setError(refusal('edit', e));
      });
  };
  const id = `edit-${message.key}`;
  return (
    <form
      class="edit-form"
      onSubmit={(event) => {
        event.preventDefault();
        save();
      }}
    >
      <label class="sr-only" for={id}>
        Edit your message
      </label>
      <textarea
        id={id}
        ref={box}
        rows={1}
        value={text}
        disabled={busy}
        onInput={(event) => setText((event.currentTarget as HTMLTextAreaElement).value)}
        onKeyDown={(event) => {
          if (event.key === 'Escape') {
            event.preventDefault();
            onCancel();
          } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey) {
            event.preventDefault();
            save();
          }
        }}
      />
      <div class="edit-actions">
        <button type="submit" class="btn btn-primary btn-small" disabled={busy || !text.trim()}>
          {busy ? 'Saving…' : 'Save'}
        </button>
        <button type="button" class="btn btn-quiet btn-small" onClick={onCancel} disabled={busy}>
          Cancel
        </button>
      </div>
      {error && (
        <p class="msg-error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

const NEAR_BOTTOM_PX = 48;
const GROUP_MS = 5 * 60_000;

/** Consecutive messages of one sender, the same day, minutes apart: one group. */
function sameGroup(a: ChatMessage | undefined, b: ChatMessage | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  return (
    a.senderType === b.senderType &&
    a.senderId === b.senderId &&
    dayOf(a.createdAt) === dayOf(b.createdAt) &&
    Math.abs(Date.parse(b.createdAt) - Date.parse(a.createdAt)) < GROUP_MS
  );
}

const DELIVERY_WORD = { sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not delivered' } as const;

function Status({ message, showWord, onRetry }: { message: ChatMessage; showWord: boolean; onRetry(key: string): void }) {
  if (message.sending === 'sending') {
    return <span class="status status-sending">Sending…</span>;
  }
  if (message.sending === 'failed') {
    return (
      <span class="status status-failed" role="alert">
        Not sent{message.error ? `: ${message.error}` : ''}.{' '}
        <button type="button" class="link-button" onClick={() => onRetry(message.key)}>
          Retry
        </button>
      </span>
    );
  }
  const state = message.delivery ?? 'sent';
  const ticks = state === 'sent' ? '✓' : state === 'failed' ? '!' : '✓✓';
  return (
    <span class={classes('status', `status-${state}`)} title={DELIVERY_WORD[state]}>
      <span class="ticks" aria-hidden="true">
        {ticks}
      </span>
      <span class={showWord ? 'status-word' : 'sr-only'}>{DELIVERY_WORD[state]}</span>
    </span>
  );
}

export function MessageList(props: Props) {
  const { messages, side, myId, otherLabel } = props;
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const lastHeight = useRef(0);
  const firstKey = useRef<string | null>(null);
  const lastKey = useRef<string | null>(null);
  const [unseenBelow, setUnseenBelow] = useState(0);
  const onSeen = useRef(props.onSeen);
  onSeen.current = props.onSeen;

  // A new conversation starts at its newest message.
  useLayoutEffect(() => {
    atBottom.current = true;
    firstKey.current = null;
    lastKey.current = null;
    setUnseenBelow(0);
  }, [props.resetKey]);

  // Keep the view where the reader is: at the bottom when they were there (or just sent),
  // in place when older messages come in above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const first = messages[0]?.key ?? null;
    const last = messages[messages.length - 1] ?? null;
    const lastChanged = (last?.key ?? null) !== lastKey.current;
    const prepended = first !== firstKey.current && firstKey.current !== null && !lastChanged;
    if (prepended) {
      el.scrollTop += el.scrollHeight - lastHeight.current;
    } else if (lastChanged && last) {
      const mine = last.senderType === side && (last.senderId === myId || last.sending !== undefined);
      if (atBottom.current || mine || lastKey.current === null) {
        el.scrollTop = el.scrollHeight;
        atBottom.current = true;
      } else if (!mine) {
        setUnseenBelow((n) => n + 1);
      }
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight; // a status line grew, an image loaded…
    }
    firstKey.current = first;
    lastKey.current = last?.key ?? null;
    lastHeight.current = el.scrollHeight;
  }, [messages, side, myId]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
    lastHeight.current = el.scrollHeight;
    if (atBottom.current) setUnseenBelow(0);
  };

  // Mark the other side's messages read once they are on screen.
  const observer = useRef<IntersectionObserver | null>(null);
  useEffect(() => {
    const root = scroller.current;
    if (!root || typeof IntersectionObserver === 'undefined') return undefined;
    const io = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const rootHeight = entry.rootBounds?.height ?? 0;
          const seen =
            entry.isIntersecting &&
            (entry.intersectionRatio >= 0.6 || (rootHeight > 0 && entry.intersectionRect.height >= rootHeight * 0.6));
          if (!seen) continue;
          const id = (entry.target as HTMLElement).dataset['id'];
          io.unobserve(entry.target);
          if (id) onSeen.current(id);
        }
      },
      { root, threshold: [0, 0.3, 0.6, 1] },
    );
    observer.current = io;
    return () => {
      io.disconnect();
      observer.current = null;
    };
  }, []);

  useEffect(() => {
    const io = observer.current;
    const root = scroller.current;
    if (!io || !root) return;
    io.disconnect();
    root.querySelectorAll<HTMLElement>('[data-unread="true"]').forEach((el) => io.observe(el));
  });

  // A search result: brought into view once, marked until another is chosen. One older than
  // the pages loaded so far is looked for page by page, up to SEARCH_PAGES (then the person
  // scrolls up as usual: a search hit in a very long conversation must not fetch it all).
  const [found, setFound] = useState<string | null>(null);
  const searched = useRef<{ id: string | null; pages: number }>({ id: null, pages: 0 });
  useEffect(() => {
    const id = props.highlightId;
    if (!id || found === id || props.loading) return;
    const el = scroller.current?.querySelector<HTMLElement>(`[data-id="${CSS.escape(id)}"]`);
    if (!el) {
      if (searched.current.id !== id) searched.current = { id, pages: 0 };
      if (props.hasOlder && !props.loadingOlder && searched.current.pages < SEARCH_PAGES) {
        searched.current.pages += 1;
        props.onLoadOlder();
      }
      return;
    }
    el.scrollIntoView({ block: 'center' });
    // Where the view is now, known before its scroll event comes a frame later: a render in
    // between (a receipt, a new message) must not take it back to the bottom.
    const box = scroller.current;
    if (box) {
      atBottom.current = box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
      lastHeight.current = box.scrollHeight;
    }
    setFound(id);
  }, [messages, props.highlightId, props.loading, props.hasOlder, props.loadingOlder, found]);

  // Editing, confirming a delete, and the last refusal, by message key.
  const [editing, setEditing] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const setError = (key: string, text: string | null) =>
    setErrors((old) => {
      const next = { ...old };
      if (text === null) delete next[key];
      else next[key] = text;
      return next;
    });
  /** Back to the action that was used (its message's first action if it is gone). */
  const focusActions = (key: string, action: 'edit' | 'delete') =>
    requestAnimationFrame(() => {
      const item = scroller.current?.querySelector<HTMLElement>(`[data-key="${CSS.escape(key)}"]`);
      (
        item?.querySelector<HTMLElement>(`.msg-actions [data-action="${action}"]`) ??
        item?.querySelector<HTMLElement>('.msg-actions button')
      )?.focus();
    });

  useEffect(() => {
    if (confirming === null) return;
    scroller.current?.querySelector<HTMLElement>(`[data-key="${CSS.escape(confirming)}"] .confirm .btn-danger`)?.focus();
  }, [confirming]);

  const confirmDelete = (message: ChatMessage) => {
    if (!message.id) return;
    setDeleting(message.key);
    setError(message.key, null);
    props
      .onDelete(message.id)
      .then(() => {
        setConfirming(null);
        scroller.current?.focus();
      })
      .catch((e: unknown) => {
        setConfirming(null);
        setError(message.key, refusal('delete', e));
        focusActions(message.key, 'delete');
      })
      .finally(() => setDeleting(null));
  };

  const jumpToBottom = () => {
    const el = scroller.current;
    if (!el) return;
    el.scrollTo({ top: el.scrollHeight, behavior: 'smooth' });
    setUnseenBelow(0);
  };

  // The last message of this side that the other side has read / received: named in words.
  let lastOwnIndex = -1;
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const m = messages[i]!;
    if (m.senderType === side && !m.sending) {
      lastOwnIndex = i;
      break;
    }
  }

  const items: JSX.Element[] = [];
  let previousDay = '';
  messages.forEach((message, index) => {
    const day = dayOf(message.createdAt);
    if (day !== previousDay) {
      previousDay = day;
      items.push(
        <li class="day" key={`day:${message.createdAt.slice(0, 10)}:${index}`}>
          <span>{day}</span>
        </li>,
      );
    }
    const own = message.senderType === side;
    const colleague = own && side === 'staff' && myId !== null && message.senderId !== myId && !message.sending;
    const who = own ? (colleague ? 'Another agent' : 'You') : otherLabel;
    const unread = !own && props.needsRead(message);
    const grouped = sameGroup(messages[index - 1], message);
    // The other side's time shows once, under the last message of a group (screen readers get each).
    const quietMeta = !own && sameGroup(message, messages[index + 1]);
    const deleted = message.deletedAt !== null;
    const onServer = message.id !== null && !message.sending;
    // The sender edits their own; staff may delete any message (the server decides whether this
    // one handles the conversation), a customer their own.
    const canEdit = onServer && !deleted && own && message.senderId === myId;
    const canAct = onServer && !deleted && (canEdit || side === 'staff');
    items.push(
      <li
        key={message.key}
        class={classes(
          'msg',
          own ? 'msg-own' : 'msg-theirs',
          grouped && 'msg-grouped',
          message.sending && 'msg-pending',
          deleted && 'msg-deleted',
          found !== null && message.id === found && 'msg-found',
        )}
        data-id={message.id ?? undefined}
        data-key={message.key}
        data-unread={unread ? 'true' : undefined}
      >
        {colleague && !grouped && <span class="msg-author">Another agent</span>}
        {deleted ? (
          <div class="bubble bubble-deleted">
            <span class="sr-only">{who}: </span>
            Message deleted
          </div>
        ) : editing === message.key ? (
          <EditForm
            message={message}
            onSave={(content) => props.onEdit(message.id!, content)}
            onCancel={() => {
              setEditing(null);
              focusActions(message.key, 'edit');
            }}
          />
        ) : (
          <>
            {message.content && (
              <div class="bubble">
                <span class="sr-only">{who}: </span>
                {message.content}
              </div>
            )}
            {!message.content && <span class="sr-only">{who} sent: </span>}
            <Attachments
              manager={props.manager}
              files={message.attachments}
              pending={message.id === null}
              onExpired={props.onExpired}
            />
          </>
        )}
        <div class={quietMeta ? 'sr-only' : 'msg-meta'}>
          <time dateTime={message.createdAt} title={fullWhen(message.createdAt)}>
            <span class="sr-only">{fullWhen(message.createdAt)}</span>
            <span aria-hidden="true">{timeOf(message.createdAt)}</span>
          </time>
          {message.editedAt && !deleted && (
            <span class="edited" title={`Edited ${fullWhen(message.editedAt)}`}>
              edited
            </span>
          )}
          {own && !deleted && <Status message={message} showWord={index === lastOwnIndex} onRetry={props.onRetry} />}
        </div>
        {canAct && editing !== message.key && confirming !== message.key && (
            <div class="msg-actions">
              {canEdit && (
                <button
                  type="button"
                  class="link-button"
                  aria-label="Edit message"
                  data-action="edit"
                  onClick={() => {
                    setError(message.key, null);
                    setConfirming(null);
                    setEditing(message.key);
                  }}
                >
                  Edit
                </button>
              )}
              <button
                type="button"
                class="link-button link-danger"
                aria-label="Delete message"
                data-action="delete"
                onClick={() => {
                  setError(message.key, null);
                  setEditing(null);
                  setConfirming(message.key);
                }}
              >
                Delete
              </button>
            </div>
          )}
        {confirming === message.key && (
          <div
            class="confirm"
            role="group"
            aria-label="Confirm deleting the message"
            onKeyDown={(event) => {
              if (event.key === 'Escape' && deleting !== message.key) {
                event.preventDefault();
                setConfirming(null);
                focusActions(message.key, 'delete');
              }
            }}
          >
            <span>Delete this message for everyone?</span>
            <button
              type="button"
              class="btn btn-danger btn-small"
              disabled={deleting === message.key}
              onClick={() => confirmDelete(message)}
            >
              {deleting === message.key ? 'Deleting…' : 'Delete'}
            </button>
            <button
              type="button"
              class="btn btn-quiet btn-small"
              disabled={deleting === message.key}
              onClick={() => {
                setConfirming(null);
                focusActions(message.key, 'delete');
              }}
            >
              Cancel
            </button>
          </div>
        )}
        {errors[message.key] && (
          <p class="msg-error" role="alert">
            {errors[message.key]}
          </p>
        )}
      </li>,
    );
  });

  return (
    <div class="messages-wrap">
      <div class="messages" ref={scroller} onScroll={onScroll} tabIndex={0} role="region" aria-label="Messages">
        {props.hasOlder && (
          <div class="older">
            <button type="button" class="btn btn-quiet" onClick={props.onLoadOlder} disabled={props.loadingOlder}>
              {props.loadingOlder ? 'Loading…' : 'Load earlier messages'}
            </button>
          </div>
        )}
        {props.loading ? (
          <p class="placeholder">Loading messages…</p>
        ) : messages.length === 0 ? (
          <p class="placeholder">No messages yet. Say hello!</p>
        ) : (
          <ol class="message-list">{items}</ol>
        )}
      </div>
      {unseenBelow > 0 && (
        <button type="button" class="jump" onClick={jumpToBottom}>
          {unseenBelow === 1 ? '1 new message' : `${unseenBelow} new messages`} ↓
        </button>
      )}
    </div>
  );
}
