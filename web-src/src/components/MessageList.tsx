import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import type { ChatMessage } from '../conversation.ts';
import type { SenderType } from '../types.ts';
import { classes, dayOf, fullWhen, timeOf } from '../util.ts';

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
    items.push(
      <li
        key={message.key}
        class={classes('msg', own ? 'msg-own' : 'msg-theirs', grouped && 'msg-grouped', message.sending && 'msg-pending')}
        data-id={message.id ?? undefined}
        data-unread={unread ? 'true' : undefined}
      >
        {colleague && !grouped && <span class="msg-author">Another agent</span>}
        <div class="bubble">
          <span class="sr-only">{who}: </span>
          {message.content}
        </div>
        <div class={quietMeta ? 'sr-only' : 'msg-meta'}>
          <time dateTime={message.createdAt} title={fullWhen(message.createdAt)}>
            <span class="sr-only">{fullWhen(message.createdAt)}</span>
            <span aria-hidden="true">{timeOf(message.createdAt)}</span>
          </time>
          {own && <Status message={message} showWord={index === lastOwnIndex} onRetry={props.onRetry} />}
        </div>
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
