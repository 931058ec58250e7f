/** What a signed-in page holds. */
import type { Api } from './api.ts';
import type { ConnectionTracker } from './connection.ts';
import type { Hub } from './hub.ts';
import type { LiveManager } from './live.ts';
import type { ReadQueue } from './readQueue.ts';
import type { Me, SenderType } from './types.ts';

export interface Session {
  api: Api;
  me: Me;
  /** Which side this page speaks for. */
  side: SenderType;
  manager: LiveManager;
  hub: Hub;
  connection: ConnectionTracker;
  reads: ReadQueue;
  /** The token stopped working (401, expired, revoked): back to sign-in with a message. */
  expired(error?: unknown): void;
  signOut(): void;
  /** Tell screen-reader users something (a polite live region). */
  announce(text: string): void;
  /** What the page keeps across a reload of its data (after lost history). */
  memory: { selectedId: string | null };
}
