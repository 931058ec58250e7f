/**
 * Searching messages from the list pane: a search box, then the matches with their snippets
 * (the matched words highlighted) in place of the list; a result opens its conversation.
 * Snippets are the server's HTML (escaped text, matches in `<mark>`): they are taken apart and
 * rendered as text and <mark> elements, never put into the page as HTML.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { messageOf, statusOf, type Api } from '../api.ts';
import type { SearchResult, SenderType } from '../types.ts';
import { shortWhen } from '../util.ts';
import { SearchIcon } from './Icons.tsx';

const DEBOUNCE_MS = 300;
const MAX_QUERY = 200;

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

/** A snippet as pieces of text, each marked (a match) or not. */
export function snippetParts(snippet: string): { text: string; mark: boolean }[] {
  const parts: { text: string; mark: boolean }[] = [];
  let mark = false;
  for (const piece of snippet.split(/(<mark>|<\/mark>)/i)) {
    const tag = piece.toLowerCase();
    if (tag === '<mark>') mark = true;
    else if (tag === '</mark>') mark = false;
    else if (piece) parts.push({ text: decodeEntities(piece), mark });
  }
  return parts;
}

export function Snippet({ html }: { html: string }) {
  return (
    <>
      {snippetParts(html).map((part, i) => (part.mark ? <mark key={i}>{part.text}</mark> : <span key={i}>{part.text}</span>))}
    </>
  );
}

interface BoxProps {
  query: string;
  onQuery(query: string): void;
}

export function SearchBox({ query, onQuery }: BoxProps) {
  return (
    <form
      class="search"
      role="search"
      onSubmit={(event) => event.preventDefault()}
    >
      <label class="sr-only" for="search-messages">
        Search messages
      </label>
      <SearchIcon />
      <input
        id="search-messages"
        type="search"
        value={query}
        maxLength={MAX_QUERY}
        placeholder="Search"
        autoComplete="off"
        onInput={(event) => onQuery((event.currentTarget as HTMLInputElement).value)}
        onKeyDown={(event) => {
          if (event.key === 'Escape' && query) {
            event.preventDefault();
            onQuery('');
          }
        }}
      />
    </form>
  );
}

interface ResultsProps {
  api: Api;
  query: string;
  side: SenderType;
  otherLabel: string;
  titleOf(conversationId: string): string;
  onOpen(conversationId: string, messageId: string): void;
  onExpired(error: unknown): void;
  /** The result opened last. */
  openedId: string | null;
}

type State =
  | { kind: 'waiting' }
  | { kind: 'done'; results: SearchResult[] }
  | { kind: 'error'; message: string };

export function SearchResults({ api, query, side, otherLabel, titleOf, onOpen, onExpired, openedId }: ResultsProps) {
  const [state, setState] = useState<State>({ kind: 'waiting' });
  const sequence = useRef(0);

  useEffect(() => {
    const q = query.trim();
    const mine = ++sequence.current;
    setState({ kind: 'waiting' });
    if (!q) return undefined;
    const timer = setTimeout(() => {
      api
        .search(q, 30)
        .then((results) => {
          if (mine === sequence.current) setState({ kind: 'done', results });
        })
        .catch((error: unknown) => {
          if (mine !== sequence.current) return;
          if (statusOf(error) === 401) onExpired(error);
          const message =
            statusOf(error) === 422
              ? `This search cannot be run: ${messageOf(error)}`
              : statusOf(error) === 429
                ? 'Too many searches: wait a moment.'
                : `The search failed: ${messageOf(error)}`;
          setState({ kind: 'error', message });
        });
    }, DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [api, query]);

  const status =
    state.kind === 'waiting'
      ? 'Searching…'
      : state.kind === 'error'
        ? ''
        : state.results.length === 0
          ? 'No messages match.'
          : state.results.length === 1
            ? '1 message found'
            : `${state.results.length} messages found`;

  return (
    <div class="search-results">
      <p class="search-status" role="status" aria-live="polite">
        {status}
      </p>
      {state.kind === 'error' && (
        <div class="notice notice-error" role="alert">
          {state.message}
        </div>
      )}
      {state.kind === 'done' && state.results.length > 0 && (
        <ul class="conv-list" aria-label="Search results">
          {state.results.map((result) => {
            const who = result.senderType === side ? 'You' : otherLabel;
            return (
              <li key={result.messageId}>
                <button
                  type="button"
                  class={result.messageId === openedId ? 'conv result conv-selected' : 'conv result'}
                  aria-current={result.messageId === openedId ? 'true' : undefined}
                  onClick={() => onOpen(result.conversationId, result.messageId)}>
                  <span class="conv-row">
                    <span class="conv-title">{titleOf(result.conversationId)}</span>
                    <span class="conv-when">{shortWhen(result.createdAt)}</span>
                  </span>
                  <span class="result-snippet">
                    <span class="result-who">{who}: </span>
                    <Snippet html={result.snippet} />
                  </span>
                </button>
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}
