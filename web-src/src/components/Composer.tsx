import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { SendIcon } from './Icons.tsx';

/** Unsent text per conversation, kept while switching between them. */
const drafts = new Map<string, string>();

interface Props {
  conversationId: string;
  /** "Message to the customer". */
  label: string;
  onSend(content: string): void;
  onKeystroke(): void;
  onStopTyping(): void;
  autoFocus: boolean;
}

const MAX_HEIGHT_PX = 160;

export function Composer({ conversationId, label, onSend, onKeystroke, onStopTyping, autoFocus }: Props) {
  const [text, setText] = useState(() => drafts.get(conversationId) ?? '');
  const input = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    setText(drafts.get(conversationId) ?? '');
    if (autoFocus) input.current?.focus();
  }, [conversationId, autoFocus]);

  useLayoutEffect(() => {
    const el = input.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, MAX_HEIGHT_PX)}px`;
  }, [text]);

  const update = (value: string) => {
    setText(value);
    if (value) drafts.set(conversationId, value);
    else drafts.delete(conversationId);
  };

  const submit = () => {
    const content = text.trim();
    if (!content) return;
    onSend(content);
    update('');
    input.current?.focus();
  };

  const hintId = `composer-hint-${conversationId}`;
  return (
    <form
      class="composer"
      onSubmit={(event) => {
        event.preventDefault();
        submit();
      }}
    >
      <label class="sr-only" for={`composer-${conversationId}`}>
        {label}
      </label>
      <textarea
        id={`composer-${conversationId}`}
        ref={input}
        rows={1}
        value={text}
        placeholder="Write a message…"
        aria-describedby={hintId}
        onInput={(event) => {
          const value = (event.currentTarget as HTMLTextAreaElement).value;
          update(value);
          if (value.trim()) onKeystroke();
          else onStopTyping();
        }}
        onKeyDown={(event) => {
          if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && !event.altKey) {
            event.preventDefault();
            submit();
          }
        }}
        onBlur={onStopTyping}
      />
      <button type="submit" class="btn btn-primary send" disabled={!text.trim()}>
        <SendIcon />
        <span>Send</span>
      </button>
      <p id={hintId} class="composer-hint">
        Enter to send · Shift+Enter for a new line
      </p>
    </form>
  );
}
