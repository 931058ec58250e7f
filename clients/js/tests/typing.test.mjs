// Typing: start and stop over the socket, over HTTP without a subscription, expiry noticed by
// the client itself, and the typing helper driven by keystrokes.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { TypingHelper, parseTimestamp } from '../dist/index.js'
import { Managers, Recorder, conversation, within } from './helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(() => managers.close())

test('typing starts and stops, over the socket and over HTTP', async () => {
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('staff')
  const csub = customer.subscribeToConversation(conv.id)
  const ssub = staff.subscribeToConversation(conv.id, seen.handlers())
  await within(Promise.all([csub.ready, ssub.ready]))

  // over the socket: the customer's conversation channel is joined
  await customer.sendTypingIndicator(conv.id, undefined, conv.customer.id, true)
  const started = await seen.expect('typing', (t) => t.customerId === conv.customer.id && t.isTyping)
  assert.equal(started.conversationId, conv.id)
  assert.equal(started.userId, undefined)
  assert.ok(parseTimestamp(started.expiresAt) > parseTimestamp(started.startedAt))
  assert.ok(Number.isInteger(started.position))
  await customer.sendTypingIndicator(conv.id, undefined, conv.customer.id, false)
  const stopped = await seen.expect('typing', (t) => t.customerId === conv.customer.id && !t.isTyping)
  assert.equal(stopped.change, 'UPDATE')
  assert.ok(stopped.position > started.position)

  // over HTTP: a manager with no subscription covering the conversation
  const rest = managers.open(conv.customer.token)
  const mark = seen.mark()
  await rest.sendTypingIndicator(conv.id, undefined, conv.customer.id, true)
  await seen.expect('typing', (t) => t.customerId === conv.customer.id && t.isTyping, { since: mark })
})

test('typing stops at its expiry without a change from the server', async () => {
  // The wrapper's server deletes expired indicators only every 60 s: the stop seen here can
  // only come from the client's own timer at expiresAt.
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('customer')
  const csub = customer.subscribeToConversation(conv.id, seen.handlers())
  const ssub = staff.subscribeToConversation(conv.id)
  await within(Promise.all([csub.ready, ssub.ready]))

  await staff.sendTypingIndicator(conv.id, conv.staff.id, undefined, true)
  const started = await seen.expect('typing', (t) => t.userId === conv.staff.id && t.isTyping)
  const expiresAt = parseTimestamp(started.expiresAt)
  const expired = await seen.expect('typing', (t) => t.userId === conv.staff.id && !t.isTyping, {
    timeout: expiresAt - Date.now() + 2000,
  })
  const noticed = seen.events.find((e) => e.event === expired).at
  assert.ok(noticed >= expiresAt - 50, `stopped ${expiresAt - noticed} ms before expiresAt`)
  assert.ok(noticed <= expiresAt + 1000, `stopped ${noticed - expiresAt} ms after expiresAt`)
  assert.equal(expired.position, undefined, 'noticed by the client, not a change of the feed')
  assert.equal(expired.id, started.id)
  assert.equal(expired.conversationId, conv.id)
})

test('the typing helper starts on a keystroke and stops when told', async () => {
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('staff')
  const ssub = staff.subscribeToConversation(conv.id, seen.handlers())
  const csub = customer.subscribeToConversation(conv.id)
  await within(Promise.all([csub.ready, ssub.ready]))

  const errors = []
  const helper = new TypingHelper(customer, conv.id, { onError: (error) => errors.push(error) })
  helper.keystroke()
  helper.keystroke() // one start for a burst of keys
  await seen.expect('typing', (t) => t.customerId === conv.customer.id && t.isTyping)
  helper.stop()
  await seen.expect('typing', (t) => t.customerId === conv.customer.id && !t.isTyping)
  await helper.close()
  assert.equal(helper.isTyping, false)
  assert.deepEqual(errors, [])
  assert.equal(seen.of('typing', (t) => t.customerId === conv.customer.id && t.isTyping).length, 1)
})
