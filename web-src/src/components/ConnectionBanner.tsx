import { useEffect, useState } from 'preact/hooks';
import type { ConnectionState, ConnectionTracker } from '../connection.ts';

/** "Connecting…" only if it takes a while; "offline, reconnecting" while the socket is away. */
const SLOW_CONNECT_MS = 4000;

export function ConnectionBanner({ connection }: { connection: ConnectionTracker }) {
  const [state, setState] = useState<ConnectionState>(connection.state);
  const [slow, setSlow] = useState(false);

  useEffect(() => connection.listen(setState), [connection]);

  useEffect(() => {
    if (state !== 'connecting') {
      setSlow(false);
      return undefined;
    }
    const timer = setTimeout(() => setSlow(true), SLOW_CONNECT_MS);
    return () => clearTimeout(timer);
  }, [state]);

  const text =
    state === 'offline'
      ? 'Connection lost. Reconnecting… New messages will appear as soon as it is back.'
      : state === 'connecting' && slow
        ? 'Connecting to the server…'
        : '';
  return (
    <div class={text ? 'banner banner-offline' : 'banner banner-hidden'} role="status" aria-live="polite">
      {text && (
        <>
          <span class="spinner" aria-hidden="true" />
          <span>{text}</span>
        </>
      )}
    </div>
  );
}
