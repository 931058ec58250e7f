import type { JSX } from 'preact';
import type { Conversation } from '../types.ts';
import { classes, shortWhen } from '../util.ts';
import { PresenceDot, type PresenceInfo } from './Presence.tsx';

export interface ListEntry {
  conversation: Conversation;
  title: string;
  subtitle: string | null;
  preview: string | null;
  when: string | null;
  unread: number;
  typing: boolean;
  /** The other side's presence, shown as a dot with text. */
  presence: PresenceInfo | null;
  presenceText: string;
}

interface Props {
  entries: ListEntry[];
  selectedId: string | null;
  onSelect(id: string): void;
  loading: boolean;
  error: string | null;
  onRetry(): void;
  hasMore: boolean;
  loadingMore: boolean;
  onLoadMore(): void;
  emptyText: string;
  heading: string;
  action?: JSX.Element | null;
  /** Under the heading: the search box and the queue filters. */
  tools?: JSX.Element | null;
  /** Shown instead of the list (search results). */
  replacement?: JSX.Element | null;
}

/**
 * The list is one stop in the Tab order (the open conversation, else the first); Up/Down/Home/End
 * move between conversations, Enter or Space opens one.
 */
function onListKey(event: KeyboardEvent) {
  const keys = ['ArrowDown', 'ArrowUp', 'Home', 'End'];
  if (!keys.includes(event.key)) return;
  const list = event.currentTarget as HTMLElement;
  const buttons = [...list.querySelectorAll<HTMLButtonElement>('button.conv')];
  const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
  if (at < 0 || buttons.length === 0) return;
  event.preventDefault();
  const next =
    event.key === 'Home'
      ? 0
      : event.key === 'End'
        ? buttons.length - 1
        : Math.min(buttons.length - 1, Math.max(0, at + (event.key === 'ArrowDown' ? 1 : -1)));
  buttons[next]?.focus();
}

export function ConversationList(props: Props) {
  return (
    <nav class="sidebar" aria-labelledby="conversations-heading">
      <div class="sidebar-head">
        <h2 id="conversations-heading">{props.heading}</h2>
        {props.action}
      </div>
      {props.tools}
      {props.replacement ?? (
        <>
          {props.error && (
            <div class="notice notice-error" role="alert">
              {props.error}{' '}
              <button type="button" class="link-button" onClick={props.onRetry}>
                Try again
              </button>
            </div>
          )}
          {props.loading ? (
            <p class="placeholder">Loading conversations…</p>
          ) : props.entries.length === 0 && !props.error ? (
            <p class="placeholder">{props.emptyText}</p>
          ) : (
            <ul class="conv-list" role="list" onKeyDown={onListKey}>
              {props.entries.map((entry, index) => {
                const selected = entry.conversation.id === props.selectedId;
                const tabStop = selected || (index === 0 && !props.entries.some((e) => e.conversation.id === props.selectedId));
                const preview = entry.typing ? 'typing…' : (entry.preview ?? 'No messages yet');
                const label = [
                  entry.title,
                  entry.subtitle,
                  entry.presenceText,
                  entry.unread > 0 ? `${entry.unread} unread` : null,
                  entry.typing ? 'typing' : entry.preview ? `last message: ${entry.preview}` : 'no messages yet',
                  entry.when ? shortWhen(entry.when) : null,
                ]
                  .filter(Boolean)
                  .join(', ');
                return (
                  <li key={entry.conversation.id}>
                    <button
                      type="button"
                      class={classes('conv', selected && 'conv-selected', entry.unread > 0 && 'conv-unread')}
                      aria-current={selected ? 'true' : undefined}
                      tabIndex={tabStop ? 0 : -1}
                      aria-label={label}
                      onClick={() => props.onSelect(entry.conversation.id)}
                    >
                      <span class="conv-row">
                        <span class="conv-title">{entry.title}</span>
                        {entry.when && <span class="conv-when">{shortWhen(entry.when)}</span>}
                      </span>
                      <span class="conv-row conv-row-sub">
                        <span class="conv-presence">
                          <PresenceDot status={entry.presence?.status ?? null} />
                          <span>{entry.presenceText}</span>
                          {entry.subtitle && <span class="conv-subtitle"> · {entry.subtitle}</span>}
                        </span>
                      </span>
                      <span class="conv-row">
                        <span class={classes('conv-preview', entry.typing && 'conv-typing')}>{preview}</span>
                        {entry.unread > 0 && <span class="badge">{entry.unread > 99 ? '99+' : entry.unread}</span>}
                      </span>
                    </button>
                  </li>
                );
              })}
            </ul>
          )}
          {props.hasMore && (
            <div class="more">
              <button type="button" class="btn btn-quiet" onClick={props.onLoadMore} disabled={props.loadingMore}>
                {props.loadingMore ? 'Loading…' : 'Load more conversations'}
              </button>
            </div>
          )}
        </>
      )}
    </nav>
  );
}
