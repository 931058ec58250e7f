// Resume: the server restarts in the middle of a conversation; the subscription rejoins with
// the last position it saw and gets exactly what it missed, once, in order.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ChannelClosedError, ChannelError, ConnectionLostError, HistoryLostError } from '../dist/index.js'
import { Managers, RESTART_URL, Recorder, call, conversation, restartServer, within } from './helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(async () => {
  await managers.close()
  await restartServer('start') // whatever happened, leave it running
})

test('after a server restart nothing is missed and nothing is delivered twice', async () => {
  const conv = await conversation()
  // The staff user is on the server that restarts; the customer writes through the other one
  // (same database), which stays up, so messages are written while the first one is down.
  const staff = managers.open(conv.staff.token, { url: RESTART_URL })
  const customer = managers.open(conv.customer.token)
  const seen = new Recorder('staff')
  const sub = staff.subscribeToConversation(conv.id, seen.handlers())
  await within(sub.ready)
  const expected = []
  const send = async (content) => {
    const message = await customer.sendMessage(conv.id, content)
    expected.push(message.id)
    return message
  }

  await send('m0')
  await seen.expect('message', (m) => m.id === expected[0])
  const before = sub.lastPosition
  assert.ok(Number.isInteger(before))
  assert.deepEqual(seen.of('rejoin'), []) // not on the first join

  await restartServer('stop')
  await seen.expect('error', (e) => e instanceof ConnectionLostError)
  for (let i = 1; i <= 5; i++) await send(`m${i}`) // only in the database meanwhile
  await restartServer('start')
  for (let i = 6; i <= 8; i++) await send(`m${i}`) // racing the rejoin
  await seen.expect('message', (m) => m.id === expected[8], { timeout: 15_000 })
  // once rejoined, complete: after what was replayed (everything sent while it was down)
  const rejoin = await seen.expect('rejoin')
  assert.equal(rejoin.complete, true)
  assert.equal(rejoin.topic, `conversation:${conv.id}`)
  assert.equal(rejoin.conversationId, conv.id)
  const order = seen.events.map((e) => (e.kind === 'rejoin' ? 'rejoin' : e.event.id))
  assert.ok(order.indexOf('rejoin') > order.indexOf(expected[5]), order.join(' '))

  // live again; everything before this one has arrived, in order, each once
  await send('live')
  await seen.expect('message', (m) => m.id === expected[9])
  assert.deepEqual(
    seen.of('message').map((m) => m.id),
    expected,
  )
  assert.equal(sub.state, 'joined')
  assert.ok(sub.lastPosition > before)
  assert.equal(seen.of('rejoin').length, 1) // once per rejoin

  // the acknowledgements that failed while the server was down were sent once it was back
  for (const id of expected) {
    await seen.expect('deliveryStatus', (d) => d.messageId === id && d.status === 'delivered', {
      timeout: 15_000,
    })
  }
  const errors = seen.of('error')
  assert.ok(errors.every((e) => e instanceof ConnectionLostError), errors.join('\n'))
})

test('a channel the server closed (its token was revoked) rejoins on setAuth and resumes', async () => {
  const conv = await conversation()
  const client = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('customer')
  const sub = client.subscribeToConversation(conv.id, seen.handlers())
  await within(sub.ready)
  const first = await staff.sendMessage(conv.id, 'before')
  await seen.expect('message', (m) => m.id === first.id)

  await call('DELETE', `/api/admin/portal-tokens/${conv.customer.tokenId}`)
  await seen.expect('error', (e) => e instanceof ChannelClosedError)
  assert.equal(sub.state, 'closed')
  const missed = await staff.sendMessage(conv.id, 'while closed')

  const portal = await call('POST', `/api/admin/customers/${conv.customer.id}/portal-tokens`, { body: {} })
  await client.setAuth(portal.token)
  await within(sub.ready)
  assert.equal(sub.state, 'joined')
  await seen.expect('message', (m) => m.id === missed.id)
  assert.equal((await seen.expect('rejoin')).complete, true)
  const after = await staff.sendMessage(conv.id, 'after')
  await seen.expect('message', (m) => m.id === after.id)
  assert.deepEqual(seen.of('message').map((m) => m.id), [first.id, missed.id, after.id])
  // the server said why before closing: a channel error, then the close
  const errors = seen.of('error')
  assert.ok(errors.every((e) => e instanceof ChannelError), errors.join('\n'))
})

test('a rejoin past what the server keeps says the history is incomplete', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token, { url: RESTART_URL })
  const customer = managers.open(conv.customer.token)
  const seen = new Recorder('staff')
  const sub = staff.subscribeToConversation(conv.id, seen.handlers())
  await within(sub.ready)
  const first = await customer.sendMessage(conv.id, 'before')
  await seen.expect('message', (m) => m.id === first.id)

  await restartServer('stop')
  await seen.expect('error', (e) => e instanceof ConnectionLostError)
  const lost = await customer.sendMessage(conv.id, 'pruned before the rejoin')
  await restartServer('prune')
  await restartServer('start')
  const rejoin = await seen.expect('rejoin', () => true, { timeout: 15_000 })
  assert.equal(rejoin.complete, false)
  assert.equal(rejoin.conversationId, conv.id)
  assert.ok(seen.of('error').some((e) => e instanceof HistoryLostError))
  assert.ok(!seen.of('message').some((m) => m.id === lost.id))

  // live again, without another rejoin
  const after = await customer.sendMessage(conv.id, 'after')
  await seen.expect('message', (m) => m.id === after.id)
  assert.equal(seen.of('rejoin').length, 1)
})
