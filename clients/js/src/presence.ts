/**
 * Presence of one conversation as the live `presence:<conversation_id>` channel tells it.
 *
 * Two sources, merged in arrival order: the Phoenix presence the server keeps on the topic (each
 * staff user and customer with the channel joined, under their id, with a `status` that follows
 * their presence row; docs/presence.md) and the `user_presence` rows the identity may see
 * (staff: every row, live; a customer: their own). Someone who leaves the channel falls back to
 * their last row, or offline when this identity sees no rows of theirs.
 */

import type { RealtimePresenceState } from '@supabase/realtime-js'
import { participantOf, type PresenceEvent, type PresenceStatus } from './events.js'

type Kind = 'staff' | 'customer'

export class PresenceView {
  /** The latest row of each participant (from changes, or the initial snapshot). */
  private readonly rows = new Map<string, PresenceEvent>()
  /** Who the Phoenix presence lists now, with their status. */
  private readonly live = new Map<string, PresenceStatus>()
  /** The merged status: what isOnline answers. */
  private readonly current = new Map<string, PresenceStatus>()
  private readonly kinds = new Map<string, Kind>()
  private readonly firstSeen = new Map<string, string>()
  /**
   * The conversation's participants: whoever was on the channel or in the snapshot. A staff
   * identity sees every presence row of the installation; only these are reported.
   */
  private readonly participants = new Set<string>()

  constructor(private readonly emit: (event: PresenceEvent) => void) {}

  /** A `user_presence` change. */
  row(event: PresenceEvent): void {
    const id = participantOf(event)
    if (id === undefined) return
    this.rows.set(id, event)
    this.current.set(id, event.status)
    if (this.participants.has(id)) this.emit(this.eventFor(id))
  }

  /** The participants' rows when the channel joined (`GET /api/conversations/{id}/presence`). */
  snapshot(rows: readonly PresenceEvent[]): void {
    for (const row of rows) {
      const id = participantOf(row)
      if (id === undefined) continue
      this.participants.add(id)
      if (this.rows.has(id)) continue // a change came first: it is newer
      this.rows.set(id, row)
      if (this.live.has(id)) continue
      const before = this.current.get(id)
      this.current.set(id, row.status)
      if (before !== row.status) this.emit(this.eventFor(id))
    }
  }

  /** A Phoenix presence sync: compare with what was listed before, report the differences. */
  sync(state: RealtimePresenceState<Record<string, unknown>>): void {
    const now = new Map<string, PresenceStatus>()
    for (const [key, metas] of Object.entries(state)) {
      let status: PresenceStatus = 'away'
      for (const meta of metas) {
        const kind: unknown = meta['kind']
        if (kind === 'staff' || kind === 'customer') this.kinds.set(key, kind)
        // A meta without a status (a client's own track on a plain topic) is someone present.
        if (meta['status'] !== 'away') status = 'online'
      }
      now.set(key, status)
    }
    for (const [id, status] of now) {
      if (this.live.get(id) === status) continue
      this.live.set(id, status)
      const known = this.participants.has(id)
      this.participants.add(id)
      if (!this.firstSeen.has(id)) this.firstSeen.set(id, new Date().toISOString())
      this.update(id, status, !known)
    }
    for (const id of [...this.live.keys()]) {
      if (now.has(id)) continue
      this.live.delete(id)
      this.update(id, this.rows.get(id)?.status ?? 'offline', false)
    }
  }

  /** Report a participant when their status changed (the row and the channel often agree). */
  private update(id: string, status: PresenceStatus, arrived: boolean): void {
    const before = this.current.get(id)
    this.current.set(id, status)
    if (arrived || before !== status) this.emit(this.eventFor(id))
  }

  list(): PresenceEvent[] {
    return [...this.participants].map((id) => this.eventFor(id))
  }

  isOnline(id: string): boolean {
    return this.current.get(id) === 'online'
  }

  private eventFor(id: string): PresenceEvent {
    const status = this.current.get(id) ?? 'offline'
    const row = this.rows.get(id)
    if (row !== undefined) return { ...row, status }
    // Known only from the channel: no row id or last-seen time of the server's; the id is the
    // participant's and lastSeenAt when this client first saw them.
    const who = this.kinds.get(id) === 'staff' ? { userId: id } : { customerId: id }
    return { id, ...who, status, lastSeenAt: this.firstSeen.get(id) ?? new Date().toISOString() }
  }
}
