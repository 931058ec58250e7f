import { useEffect, useRef, useState } from 'preact/hooks';
import { messageOf, statusOf, type Api } from '../api.ts';
import type { Conversation } from '../types.ts';

interface Props {
  api: Api;
  /** The customer has no conversation yet. */
  first: boolean;
  onStarted(conversation: Conversation): void;
  onCancel: (() => void) | null;
  onExpired(error: unknown): void;
}

/** A customer opens a conversation (`POST /api/conversations` with a subject). */
export function StartConversation({ api, first, onStarted, onCancel, onExpired }: Props) {
  const [subject, setSubject] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => {
    if (!first) input.current?.focus();
  }, [first]);

  const submit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      const conversation = await api.openConversation(subject.trim() || null);
      onStarted(conversation);
    } catch (failure) {
      if (statusOf(failure) === 401) {
        onExpired(failure);
        return;
      }
      setError(`The conversation could not be started: ${messageOf(failure)}`);
      setBusy(false);
    }
  };

  return (
    <div class="start">
      <form class="card" onSubmit={submit} aria-labelledby="start-heading">
        <h2 id="start-heading">{first ? 'How can we help?' : 'New conversation'}</h2>
        <p class="muted">
          {first
            ? 'Start a conversation and an agent will answer here. You will see when they read your messages.'
            : 'Start another conversation about something else.'}
        </p>
        <label class="field">
          <span>Subject (optional)</span>
          <input
            ref={input}
            type="text"
            value={subject}
            maxLength={200}
            placeholder="For example: Question about my order"
            onInput={(e) => setSubject((e.currentTarget as HTMLInputElement).value)}
          />
        </label>
        {error && (
          <p class="notice notice-error" role="alert">
            {error}
          </p>
        )}
        <div class="actions">
          {onCancel && (
            <button type="button" class="btn btn-quiet" onClick={onCancel}>
              Cancel
            </button>
          )}
          <button type="submit" class="btn btn-primary" disabled={busy}>
            {busy ? 'Starting…' : 'Start a conversation'}
          </button>
        </div>
      </form>
    </div>
  );
}
