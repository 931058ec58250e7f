import type { PresenceStatus } from '../types.ts';
import { ago, classes } from '../util.ts';

export interface PresenceInfo {
  status: PresenceStatus;
  lastSeenAt: string | null;
}

const WORD: Record<PresenceStatus, string> = { online: 'Online', away: 'Away', offline: 'Offline' };

/** "Online" / "Away" / "Offline · last seen 5 min ago", prefixed by `who` if given ("Agent online"). */
export function presenceText(presence: PresenceInfo | null, who?: string): string {
  const status = presence?.status ?? 'offline';
  const word = who ? `${who} ${WORD[status].toLowerCase()}` : WORD[status];
  if (status === 'offline' && presence?.lastSeenAt) return `${word} · last seen ${ago(presence.lastSeenAt)}`;
  return word;
}

export function PresenceDot({ status }: { status: PresenceStatus | null }) {
  return <span class={classes('dot', `dot-${status ?? 'offline'}`)} aria-hidden="true" />;
}

export function PresenceBadge({ presence, who, text }: { presence: PresenceInfo | null; who?: string; text?: string }) {
  return (
    <span class="presence">
      <PresenceDot status={presence?.status ?? null} />
      <span>{text ?? presenceText(presence, who)}</span>
    </span>
  );
}
