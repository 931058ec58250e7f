// Typing: start and stop over the socket, over HTTP without a subscription, expiry noticed by
// the client itself, and the typing helper driven by keystrokes.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { TypingHelper, parseTimestamp } from '../dist/index.js'
import { Managers, Recorder, TYPING_LIMIT, conversation, within } from './helpers.mjs'

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

test('a burst is one start and one stop for a subscriber, refreshes and all', async () => {
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('staff')
  const csub = customer.subscribeToConversation(conv.id)
  const ssub = staff.subscribeToConversation(conv.id, seen.handlers())
  await within(Promise.all([csub.ready, ssub.ready]))

  // A start and two refreshes (three changes on the feed), then the stop: the typing limit.
  for (let i = 0; i < TYPING_LIMIT - 1; i++) await customer.sendTypingIndicator(conv.id)
  await customer.sendTypingIndicator(conv.id, undefined, undefined, false)
  // Changes arrive in commit order: once the marker is here, every typing change was seen.
  const marker = await staff.sendMessage(conv.id, 'marker')
  await seen.expect('message', (m) => m.id === marker.id)
  const typing = seen.of('typing')
  assert.deepEqual(
    typing.map((t) => [t.customerId, t.isTyping]),
    [
      [conv.customer.id, true],
      [conv.customer.id, false],
    ],
  )
  assert.equal(typing[1].change, 'UPDATE')
})

test("the typist's own clients hear their typing only when they ask", async () => {
  const conv = await conversation()
  const open = (token, options = {}) => {
    const manager = managers.open(token, options)
    const recorder = new Recorder(`${token.slice(0, 8)} ${JSON.stringify(options)}`)
    return { manager, recorder, sub: manager.subscribeToConversation(conv.id, recorder.handlers()) }
  }
  const customer = open(conv.customer.token)
  const customerTab = open(conv.customer.token)
  const customerAsks = open(conv.customer.token, { includeOwnTyping: true })
  const staff = open(conv.staff.token)
  const staffTab = open(conv.staff.token)
  const staffAsks = open(conv.staff.token, { includeOwnTyping: true })
  const all = [customer, customerTab, customerAsks, staff, staffTab, staffAsks]
  await within(Promise.all(all.map((c) => c.sub.ready)))

  for (const typist of [customer, staff]) {
    await typist.manager.sendTypingIndicator(conv.id, undefined, undefined, true)
    await typist.manager.sendTypingIndicator(conv.id, undefined, undefined, false)
  }
  const marker = await staff.manager.sendMessage(conv.id, 'marker')
  await within(Promise.all(all.map((c) => c.recorder.expect('message', (m) => m.id === marker.id))))
  const heard = (c) => c.recorder.of('typing').map((t) => `${t.userId ? 'staff' : 'customer'} ${t.isTyping}`)
  const customerTyping = ['customer true', 'customer false']
  const staffTyping = ['staff true', 'staff false']
  assert.deepEqual(heard(customer), staffTyping)
  assert.deepEqual(heard(customerTab), staffTyping)
  assert.deepEqual(heard(customerAsks), [...customerTyping, ...staffTyping])
  assert.deepEqual(heard(staff), customerTyping)
  assert.deepEqual(heard(staffTab), customerTyping)
  assert.deepEqual(heard(staffAsks), [...customerTyping, ...staffTyping])
})
