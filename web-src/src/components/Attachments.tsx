/**
 * The files of a message: images as previews, other files as a download link with name and
 * size. Links are signed and short-lived (docs/files.md), so each is asked for when shown (an
 * image) or clicked (a file), and asked again once expired. Filenames are shown as text only.
 */
import { useEffect, useState } from 'preact/hooks';
import { messageOf, statusOf } from '../api.ts';
import type { LiveManager } from '../live.ts';
import type { FileAttachment } from '../types.ts';

const PREVIEWABLE = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
/** A link is used until this long before it expires. */
const MARGIN_MS = 30_000;

const links = new Map<string, { url: string; expiresAt: number }>();

/** A signed link to the file, fresh enough to use now. */
async function linkOf(manager: LiveManager, id: string): Promise<string> {
  const known = links.get(id);
  if (known && known.expiresAt - MARGIN_MS > Date.now()) return known.url;
  const data = await manager.getAttachmentUrl(id);
  const expiresAt = Date.parse(data.expiresAt);
  links.set(id, { url: data.url, expiresAt: Number.isFinite(expiresAt) ? expiresAt : Date.now() + 60_000 });
  if (links.size > 500) links.delete(links.keys().next().value!);
  return data.url;
}

/** Only links of this server's file route (or an http(s) object store) are followed. */
function safeUrl(url: string): string | null {
  try {
    const parsed = new URL(url, window.location.origin);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

export function fileSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes <= 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function describe(file: FileAttachment): string {
  const size = fileSize(file.size);
  return size ? `${file.filename}, ${size}` : file.filename;
}

function ImagePreview({ manager, file, onExpired }: { manager: LiveManager; file: FileAttachment; onExpired(error: unknown): void }) {
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let cancelled = false;
    setFailed(null);
    linkOf(manager, file.id)
      .then((link) => {
        if (!cancelled) setUrl(safeUrl(link));
      })
      .catch((error: unknown) => {
        if (cancelled) return;
        if (statusOf(error) === 401) onExpired(error);
        setFailed(statusOf(error) === 404 ? 'The file is no longer available.' : `The preview could not be loaded: ${messageOf(error)}`);
      });
    return () => {
      cancelled = true;
    };
  }, [manager, file.id, attempt]);

  if (failed) {
    return (
      <div class="attachment attachment-missing">
        <span>{describe(file)}</span>
        <span class="muted">{failed}</span>
        <button type="button" class="link-button" onClick={() => setAttempt((n) => n + 1)}>
          Try again
        </button>
      </div>
    );
  }
  return (
    <figure class="attachment attachment-image">
      {url ? (
        <img
          src={url}
          alt={file.filename}
          loading="lazy"
          decoding="async"
          referrerpolicy="no-referrer"
          onError={() => {
            links.delete(file.id); // perhaps expired: a fresh link next time
            setUrl(null);
            setFailed('The preview could not be loaded.');
          }}
        />
      ) : (
        <div class="attachment-placeholder" aria-hidden="true" />
      )}
      <figcaption>
        <DownloadLink manager={manager} file={file} onExpired={onExpired} />
      </figcaption>
    </figure>
  );
}

function DownloadLink({ manager, file, onExpired }: { manager: LiveManager; file: FileAttachment; onExpired(error: unknown): void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const known = links.get(file.id);
  const size = fileSize(file.size);
  return (
    <span class="attachment-link">
      <a
        href={known ? (safeUrl(known.url) ?? undefined) : '#'}
        download={file.filename}
        aria-label={`Download ${describe(file)}`}
        aria-busy={busy ? 'true' : undefined}
        onClick={(event) => {
          event.preventDefault();
          setBusy(true);
          setError(null);
          linkOf(manager, file.id)
            .then((link) => {
              const url = safeUrl(link);
              if (url) window.location.assign(url); // served as an attachment: the page stays
            })
            .catch((e: unknown) => {
              if (statusOf(e) === 401) onExpired(e);
              setError(statusOf(e) === 404 ? 'The file is no longer available.' : `The download failed: ${messageOf(e)}`);
            })
            .finally(() => setBusy(false));
        }}
      >
        <span class="attachment-name">{file.filename}</span>
      </a>
      {size && <span class="attachment-size"> · {size}</span>}
      {error && (
        <span class="attachment-error" role="alert">
          {' '}
          {error}
        </span>
      )}
    </span>
  );
}

export function Attachments({
  manager,
  files,
  pending,
  onExpired,
}: {
  manager: LiveManager;
  files: FileAttachment[];
  /** Not on the server yet: names only. */
  pending: boolean;
  onExpired(error: unknown): void;
}) {
  if (files.length === 0) return null;
  return (
    <ul class="attachments" aria-label={files.length === 1 ? 'Attachment' : `${files.length} attachments`}>
      {files.map((file) => (
        <li key={file.id}>
          {pending ? (
            <span class="attachment attachment-file">
              <span class="attachment-name">{file.filename}</span>
              {fileSize(file.size) && <span class="attachment-size"> · {fileSize(file.size)}</span>}
            </span>
          ) : PREVIEWABLE.has(file.contentType) ? (
            <ImagePreview manager={manager} file={file} onExpired={onExpired} />
          ) : (
            <span class="attachment attachment-file">
              <FileIcon />
              <DownloadLink manager={manager} file={file} onExpired={onExpired} />
            </span>
          )}
        </li>
      ))}
    </ul>
  );
}

function FileIcon() {
  return (
    <svg class="icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" focusable="false">
      <path fill="currentColor" d="M6 2h8l6 6v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2Zm7 1.5V9h5.5L13 3.5ZM6 4v16h12V11h-7V4H6Z" />
    </svg>
  );
}
