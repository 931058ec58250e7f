import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { messageOf, statusOf } from '../api.ts';
import type { LiveManager } from '../live.ts';
import type { UploadedFile } from '../types.ts';
import { newId } from '../util.ts';
import { fileSize } from './Attachments.tsx';
import { AttachIcon, SendIcon } from './Icons.tsx';

/** Unsent text per conversation, kept while switching between them. */
const drafts = new Map<string, string>();

/** The server's limit of files per message (docs/files.md). */
const MAX_FILES = 10;

interface Props {
  conversationId: string;
  /** "Message to the customer". */
  label: string;
  manager: LiveManager;
  onSend(content: string, files: UploadedFile[]): void;
  onKeystroke(): void;
  onStopTyping(): void;
  onExpired(error: unknown): void;
  autoFocus: boolean;
}

/** A file chosen for the next message: uploading, uploaded, or refused. */
interface Pending {
  key: string;
  name: string;
  size: number;
  uploaded: UploadedFile | null;
  error: string | null;
}

const MAX_HEIGHT_PX = 160;

function uploadRefusal(error: unknown): string {
  switch (statusOf(error)) {
    case 413:
      return 'The file is too large.';
    case 415:
      return 'This type of file cannot be sent.';
    case 429:
      return 'Too many files at once: send or remove some first.';
    default:
      return `The upload failed: ${messageOf(error)}`;
  }
}

export function Composer({ conversationId, label, manager, onSend, onKeystroke, onStopTyping, onExpired, autoFocus }: Props) {
  const [text, setText] = useState(() => drafts.get(conversationId) ?? '');
  const [files, setFiles] = useState<Pending[]>([]);
  const input = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);

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

  const uploading = files.some((f) => f.uploaded === null && f.error === null);
  const ready = files.filter((f) => f.uploaded !== null).map((f) => f.uploaded!);
  const canSend = !uploading && (text.trim() !== '' || ready.length > 0);

  const submit = () => {
    const content = text.trim();
    if (!canSend) return;
    onSend(content, ready);
    update('');
    setFiles([]);
    input.current?.focus();
  };

  const choose = (list: FileList | null) => {
    if (!list) return;
    const chosen = [...list].slice(0, Math.max(0, MAX_FILES - files.length));
    const added: Pending[] = chosen.map((file) => ({ key: newId(), name: file.name, size: file.size, uploaded: null, error: null }));
    setFiles((old) => [...old, ...added]);
    chosen.forEach((file, i) => {
      const key = added[i]!.key;
      manager
        .uploadAttachment(conversationId, file)
        .then((uploaded) => setFiles((old) => old.map((f) => (f.key === key ? { ...f, uploaded } : f))))
        .catch((error: unknown) => {
          if (statusOf(error) === 401) onExpired(error);
          setFiles((old) => old.map((f) => (f.key === key ? { ...f, error: uploadRefusal(error) } : f)));
        });
    });
  };

  const remove = (key: string) => {
    setFiles((old) => old.filter((f) => f.key !== key));
    input.current?.focus();
  };

  const hintId = `composer-hint-${conversationId}`;
  const pickerId = `attach-${conversationId}`;
  return (
    <form
      class="composer"
      onSubmit={(event) => {
        event.preventDefault();
        submit();
      }}
    >
      {files.length > 0 && (
        <ul class="pending-files" aria-label="Files to send">
          {files.map((f) => (
            <li key={f.key} class={f.error ? 'pending-file pending-file-error' : 'pending-file'}>
              <span class="pending-name">{f.name}</span>
              <span class="muted">
                {f.error ? '' : f.uploaded ? fileSize(f.size) : 'Uploading…'}
              </span>
              {f.error && <span role="alert">{f.error}</span>}
              <button type="button" class="link-button" aria-label={`Remove ${f.name}`} onClick={() => remove(f.key)}>
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      <div class="composer-row">
        <input
          id={pickerId}
          ref={picker}
          class="file-input"
          type="file"
          multiple
          disabled={files.length >= MAX_FILES}
          onChange={(event) => {
            const el = event.currentTarget as HTMLInputElement;
            choose(el.files);
            el.value = ''; // the same file may be chosen again
          }}
        />
        <label for={pickerId} class="btn btn-quiet attach" title="Attach a file">
          <AttachIcon />
          <span class="sr-only">Attach a file</span>
        </label>
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
        <button type="submit" class="btn btn-primary send" disabled={!canSend}>
          <SendIcon />
          <span>Send</span>
        </button>
      </div>
      <p id={hintId} class="composer-hint">
        Enter to send · Shift+Enter for a new line
      </p>
    </form>
  );
}
