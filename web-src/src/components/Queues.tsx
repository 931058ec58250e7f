/** The staff inbox's queue filters, with their counts (GET /api/conversations/counts). */
import type { ConversationCounts, ConversationStatus, ListFilter, Queue } from '../types.ts';
import { STATUSES } from '../types.ts';

const QUEUES: { queue: Queue; label: string }[] = [
  { queue: 'all', label: 'All' },
  { queue: 'mine', label: 'Mine' },
  { queue: 'unassigned', label: 'Unassigned' },
  { queue: 'unread', label: 'Unread' },
];

const STATUS_LABEL: Record<ConversationStatus, string> = {
  open: 'Open',
  pending: 'Pending',
  resolved: 'Resolved',
  closed: 'Closed',
};

function countOf(counts: ConversationCounts | null, queue: Queue): number | null {
  if (!counts) return null;
  switch (queue) {
    case 'all':
      return counts.all;
    case 'mine':
      return counts.mine;
    case 'unassigned':
      return counts.unassigned;
    case 'unread':
      return counts.unread;
  }
}

interface Props {
  filter: ListFilter;
  counts: ConversationCounts | null;
  onChange(filter: ListFilter): void;
}

/** All / Mine / Unassigned / Unread, each with its count. */
export function QueueButtons({ filter, counts, onChange }: Props) {
  return (
    <div class="queue-buttons" role="group" aria-label="Show conversations">
      {QUEUES.map(({ queue, label }) => {
        const count = countOf(counts, queue);
        return (
          <button
            key={queue}
            type="button"
            class="queue"
            aria-pressed={filter.queue === queue ? 'true' : 'false'}
            onClick={() => onChange({ ...filter, queue })}
          >
            <span>{label}</span>
            {count !== null && <span class="queue-count">{count}</span>}
          </button>
        );
      })}
    </div>
  );
}

/** The status the list and the counts are of. */
export function StatusFilter({ filter, counts, onChange }: Props) {
  return (
    <label class="status-filter">
      <span class="sr-only">Status</span>
      <select
        value={filter.status}
        onChange={(event) => onChange({ ...filter, status: (event.currentTarget as HTMLSelectElement).value as ConversationStatus })}
      >
        {STATUSES.map((status) => (
          <option key={status} value={status}>
            {STATUS_LABEL[status]}
            {counts ? ` (${counts.byStatus[status] ?? 0})` : ''}
          </option>
        ))}
      </select>
    </label>
  );
}
