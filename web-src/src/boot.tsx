/**
 * Signing in: a `#token=…` link or a pasted token, checked with `GET /api/me`; then the
 * manager, built from `GET /web-config.json`. A refused token brings the sign-in form back with
 * the reason, a lost one (expired, revoked) too.
 */
import { render } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { Api, loadWebConfig, messageOf, statusOf } from './api.ts';
import { ChatApp } from './app.tsx';
import { ChatIcon } from './components/Icons.tsx';
import { ConnectionTracker } from './connection.ts';
import { Hub } from './hub.ts';
import { createManager, kindOfError, refusedTopicOf } from './live.ts';
import { ReadQueue } from './readQueue.ts';
import { takeTokenFromFragment, TokenStore } from './session.ts';
import type { Session } from './sessionTypes.ts';
import type { SenderType } from './types.ts';
import { debounce } from './util.ts';

export interface PageOptions {
  side: SenderType;
  storageKey: string;
}

type Phase =
  | { kind: 'checking' }
  | { kind: 'signin'; error?: string; notice?: string; retryToken?: string }
  | { kind: 'ready'; session: Session };

const LINK_REFUSED = 'This sign-in link is not valid or has expired.';
const TOKEN_REFUSED = 'This token is not valid or has expired.';
const EXPIRED = 'Your sign-in has expired or was revoked. Sign in again with a new link or token.';

function wrongPage(side: SenderType): string {
  return side === 'staff'
    ? 'This is a customer sign-in. Customers sign in on the support page (/portal).'
    : 'This is a staff sign-in. Staff sign in on the inbox (/).';
}

function Announcer({ text }: { text: string }) {
  return (
    <div class="sr-only" role="status" aria-live="polite" aria-atomic="true">
      {text}
    </div>
  );
}

function SignIn({
  side,
  error,
  notice,
  busy,
  onSubmit,
  onRetry,
}: {
  side: SenderType;
  error?: string;
  notice?: string;
  busy: boolean;
  onSubmit(token: string): void;
  onRetry?: () => void;
}) {
  const [token, setToken] = useState('');
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    input.current?.focus();
  }, [error, notice]);
  const staff = side === 'staff';
  return (
    <div class="signin">
      <form
        class="card"
        aria-labelledby="signin-heading"
        onSubmit={(event) => {
          event.preventDefault();
          const value = token.trim();
          if (value) onSubmit(value);
        }}
      >
        <div class="signin-brand">
          <ChatIcon />
          <span>{staff ? 'Inbox' : 'Support'}</span>
        </div>
        <h1 id="signin-heading">{staff ? 'Sign in to the inbox' : 'Sign in to chat with support'}</h1>
        <p class="muted">
          {staff
            ? 'Open the sign-in link you were given, or paste your staff token below.'
            : 'Open the link you received, or paste the access code from it below.'}
        </p>
        {error && (
          <div class="notice notice-error" role="alert">
            {error}
            {onRetry && (
              <>
                {' '}
                <button type="button" class="link-button" onClick={onRetry}>
                  Try again
                </button>
              </>
            )}
          </div>
        )}
        {notice && !error && (
          <div class="notice" role="status">
            {notice}
          </div>
        )}
        <label class="field">
          <span>{staff ? 'Staff token' : 'Access code'}</span>
          <input
            ref={input}
            type="password"
            autoComplete="off"
            spellcheck={false}
            value={token}
            placeholder={staff ? 'eyJ…' : 'pt_…'}
            onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
          />
        </label>
        <div class="actions">
          <button type="submit" class="btn btn-primary" disabled={busy || token.trim() === ''}>
            {busy ? 'Signing in…' : 'Sign in'}
          </button>
        </div>
      </form>
    </div>
  );
}

function Page({ side, storageKey }: PageOptions) {
  const store = useRef(new TokenStore(storageKey)).current;
  const [phase, setPhase] = useState<Phase>({ kind: 'checking' });
  const [announcement, setAnnouncement] = useState('');
  const [reloads, setReloads] = useState(0);
  const current = useRef<Session | null>(null);

  const announce = useCallback((text: string) => {
    setAnnouncement('');
    setTimeout(() => setAnnouncement(text), 50); // the same text twice is announced twice
  }, []);

  const end = useCallback(
    (next: Phase) => {
      const session = current.current;
      current.current = null;
      store.clear();
      if (session) {
        session.reads.dispose();
        session.connection.dispose();
        session.manager.close().catch((error: unknown) => console.debug('closing the manager failed', error));
      }
      setPhase(next);
    },
    [store],
  );

  const signIn = useCallback(
    async (token: string, origin: 'link' | 'stored' | 'typed') => {
      setPhase({ kind: 'checking' });
      const api = new Api(token);
      let me;
      let config;
      try {
        [config, me] = await Promise.all([loadWebConfig(), api.me()]);
      } catch (error) {
        const status = statusOf(error);
        if (status === 401 || status === 403) {
          store.clear();
          setPhase({ kind: 'signin', error: origin === 'typed' ? TOKEN_REFUSED : LINK_REFUSED });
        } else {
          const reason =
            status === 0
              ? 'The server cannot be reached. Check your connection.'
              : status === 503 || status === 429
                ? 'The server is busy. Try again in a moment.'
                : `Signing in failed: ${messageOf(error)}`;
          setPhase({ kind: 'signin', error: reason, retryToken: token });
        }
        return;
      }
      if (me.kind !== side) {
        store.clear();
        setPhase({ kind: 'signin', error: wrongPage(side) });
        return;
      }
      store.set(token);
      const hub = new Hub();
      const connection = new ConnectionTracker();
      let session: Session;
      // A channel closed or refused by the server: is the sign-in still good?
      const checkToken = debounce(500, () => {
        api.me().catch((error: unknown) => {
          if (statusOf(error) === 401) session.expired(error);
        });
      });
      const onError = (error: unknown) => {
        if (current.current !== session) return;
        switch (kindOfError(error)) {
          case 'connection':
            connection.connectionLost();
            break;
          case 'channel': {
            const refused = refusedTopicOf(error);
            if (refused !== null) connection.refusedTopic(refused);
            console.warn('realtime channel ended', error);
            checkToken();
            break;
          }
          case 'history':
            // Changes were lost while away: load everything again.
            setReloads((n) => n + 1);
            break;
          default:
            if (statusOf(error) === 401) session.expired(error);
            else console.warn('realtime error', error);
        }
      };
      const manager = createManager(config, token, onError);
      hub.listen({ onError });
      const reads = new ReadQueue(manager, (error) => session.expired(error));
      session = {
        api,
        me,
        side,
        manager,
        hub,
        connection,
        reads,
        expired: () => {
          if (current.current === session) end({ kind: 'signin', error: EXPIRED });
        },
        signOut: () => {
          if (current.current === session) end({ kind: 'signin', notice: 'You have signed out.' });
        },
        announce,
        memory: { selectedId: null },
      };
      current.current = session;
      setPhase({ kind: 'ready', session });
    },
    [side, store, end, announce],
  );

  useEffect(() => {
    const fromLink = takeTokenFromFragment();
    if (fromLink) {
      void signIn(fromLink, 'link');
      return;
    }
    const stored = store.get();
    if (stored) void signIn(stored, 'stored');
    else setPhase({ kind: 'signin' });
    // Signing in again from a link opened in this tab (the fragment changes, no reload).
    const onHash = () => {
      const token = takeTokenFromFragment();
      if (token) {
        end({ kind: 'checking' });
        void signIn(token, 'link');
      }
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  return (
    <>
      <Announcer text={announcement} />
      {phase.kind === 'ready' ? (
        <ChatApp key={reloads} session={phase.session} />
      ) : phase.kind === 'checking' ? (
        <div class="signin">
          <p class="placeholder" role="status">
            Signing in…
          </p>
        </div>
      ) : (
        <SignIn
          side={side}
          error={phase.error}
          notice={phase.notice}
          busy={false}
          onSubmit={(token) => void signIn(token, 'typed')}
          onRetry={phase.retryToken ? () => void signIn(phase.retryToken!, 'stored') : undefined}
        />
      )}
    </>
  );
}

export function start(options: PageOptions): void {
  const root = document.getElementById('root');
  if (!root) throw new Error('the page has no #root element');
  root.textContent = '';
  render(<Page {...options} />, root);
}
