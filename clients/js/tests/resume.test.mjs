// Resume: the server restarts in the middle of a conversation; the subscription rejoins with
// the last position it saw and gets exactly what it missed, once, in order.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ChannelClosedError, ChannelError, ConnectionLostError } from '../dist/index.js'
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

  await restartServer('stop')
  await seen.expect('error', (e) => e instanceof ConnectionLostError)
  for (let i = 1; i <= 5; i++) await send(`m${i}`) // only in the database meanwhile
  await restartServer('start')
  for (let i = 6; i <= 8; i++) await send(`m${i}`) // racing the rejoin
  await seen.expect('message', (m) => m.id === expected[8], { timeout: 15_000 })

  // live again; everything before this one has arrived, in order, each once
  await send('live')
  await seen.expect('message', (m) => m.id === expected[9])
  assert.deepEqual(
    seen.of('message').map((m) => m.id),
    expected,
  )
  assert.equal(sub.state, 'joined')
  assert.ok(sub.lastPosition > before)

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
  const after = await staff.sendMessage(conv.id, 'after')
  await seen.expect('message', (m) => m.id === after.id)
  assert.deepEqual(seen.of('message').map((m) => m.id), [first.id, missed.id, after.id])
  // the server said why before closing: a channel error, then the close
  const errors = seen.of('error')
  assert.ok(errors.every((e) => e instanceof ChannelError), errors.join('\n'))
})
