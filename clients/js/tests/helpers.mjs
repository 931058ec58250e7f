// Shared by the tests: the servers tests/web/test_js_client.py started (from the environment),
// people and conversations made through the admin API, managers that are always closed, and
// bounded waits for events (never a sleep standing in for synchronisation).

import { randomUUID } from 'node:crypto'
import { WebSocket } from 'ws'
import { RealtimeMessagingManager } from '../dist/index.js'

function required(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run these tests through tests/web/test_js_client.py`)
  return value
}

export const HTTP_URL = required('RTM_URL')
export const ANON_KEY = required('RTM_ANON_KEY')
export const SERVICE_KEY = required('RTM_SERVICE_KEY')
/** A second server on the same database, which `restartServer` stops and starts again. */
export const RESTART_URL = required('RTM_RESTART_URL')
const CONTROL_URL = required('RTM_CONTROL_URL')
/** The typing limit the wrapper's server runs with (per participant and conversation). */
export const TYPING_LIMIT = Number(process.env['RTM_TYPING_LIMIT'] ?? '4')
/** Bound of one expected event: everything is on loopback. */
export const WAIT_MS = 5000

/** An HTTP call; resolves to the envelope's data, throws on an error status. */
export async function call(method, path, { token = SERVICE_KEY, body, base = HTTP_URL } = {}) {
  const response = await fetch(base + path, {
    method,
    headers: {
      apikey: ANON_KEY,
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const envelope = await response.json()
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(envelope)}`)
  return envelope.data
}

export async function staffUser() {
  const user = await call('POST', '/api/admin/users', { body: { name: 'Agent' } })
  const { token } = await call('POST', `/api/admin/users/${user.id}/tokens`, { body: {} })
  return { id: user.id, token }
}

export async function customer() {
  const person = await call('POST', '/api/admin/customers', { body: { name: 'Customer' } })
  const portal = await call('POST', `/api/admin/customers/${person.id}/portal-tokens`, { body: {} })
  return { id: person.id, token: portal.token, tokenId: portal.id }
}

/** A staff user, a customer, and a conversation between them assigned to the staff user. */
export async function conversation() {
  const [staff, client] = await Promise.all([staffUser(), customer()])
  const created = await call('POST', '/api/conversations', {
    token: staff.token,
    body: { customerId: client.id, subject: 'Help' },
  })
  await call('PATCH', `/api/conversations/${created.id}`, {
    token: staff.token,
    body: { assignedUserId: staff.id },
  })
  return { staff, customer: client, id: created.id }
}

/** What a manager's handlers received, in order, with bounded waits on it. */
export class Recorder {
  constructor(name) {
    this.name = name
    this.events = []
    this.waiters = new Set()
  }

  /** Handlers for every kind of event; `errors` receives onError. */
  handlers() {
    const add = (kind) => (event) => this.add(kind, event)
    return {
      onMessage: add('message'),
      onReadReceipt: add('readReceipt'),
      onTyping: add('typing'),
      onDeliveryStatus: add('deliveryStatus'),
      onPresence: add('presence'),
      onConversation: add('conversation'),
      onRejoin: add('rejoin'),
      onError: add('error'),
    }
  }

  add(kind, event) {
    this.events.push({ kind, event, at: Date.now() })
    for (const waiter of this.waiters) waiter()
  }

  of(kind, where = () => true) {
    return this.events.filter((e) => e.kind === kind && where(e.event)).map((e) => e.event)
  }

  mark() {
    return this.events.length
  }

  /** The first event of `kind` after `since` that satisfies `where`, waiting at most `timeout` ms. */
  expect(kind, where = () => true, { since = 0, timeout = WAIT_MS } = {}) {
    const find = () =>
      this.events.slice(since).find((e) => e.kind === kind && where(e.event))?.event
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = find()
        if (found === undefined) return
        cleanup()
        resolve(found)
      }
      const timer = setTimeout(() => {
        cleanup()
        const seen = this.events
          .slice(since)
          .map((e) => `  ${e.kind} ${e.event instanceof Error ? e.event : JSON.stringify(e.event)}`)
          .join('\n')
        const wanted = `${this.name}: no ${kind} event matching ${where} within ${timeout} ms`
        reject(new Error(`${wanted}; seen:\n${seen}`))
      }, timeout)
      const cleanup = () => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
      check()
    })
  }
}

/** Wait for a promise at most `timeout` ms. */
export function within(promise, timeout = WAIT_MS, what = 'operation') {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeout} ms`)), timeout)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * Managers for one test, closed after it. Each records what reaches its `onError` (the
 * manager's own) in `recorder`.
 */
export class Managers {
  constructor() {
    this.opened = []
  }

  open(token, { url = HTTP_URL, ...options } = {}) {
    const recorder = new Recorder(`manager ${this.opened.length}`)
    const manager = new RealtimeMessagingManager(url, ANON_KEY, {
      accessToken: token,
      transport: WebSocket,
      onError: (error) => recorder.add('error', error),
      ...options,
    })
    manager.recorder = recorder
    this.opened.push(manager)
    return manager
  }

  async close() {
    await Promise.allSettled(this.opened.map((manager) => within(manager.close(), WAIT_MS, 'close')))
  }
}

/**
 * Stop (`'stop'`) or start again (`'start'`) the server at RESTART_URL, on the same port; or
 * (`'prune'`) delete the change log up to its head, as the server does with what is older than
 * its retention, so that a subscription resuming from before it has lost history.
 */
export async function restartServer(action) {
  const response = await fetch(`${CONTROL_URL}/${action}`, { method: 'POST' })
  if (!response.ok) throw new Error(`${action}: ${response.status} ${await response.text()}`)
}

export function uniqueId() {
  return randomUUID()
}
