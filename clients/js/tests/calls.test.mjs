// The HTTP calls: unread counts, and refusals as ApiError (status, code, retryAfter) or, for a
// join, JoinRefusedError.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ApiError, JoinRefusedError } from '../dist/index.js'
import { Managers, Recorder, TYPING_LIMIT, conversation, customer, uniqueId, within } from './helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(() => managers.close())

test('getUnreadCount rises with messages and returns to 0 when they are read', async () => {
  const conv = await conversation()
  const client = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  assert.equal(await client.getUnreadCount(undefined, conv.customer.id), 0)
  const first = await staff.sendMessage(conv.id, 'one')
  assert.equal(await client.getUnreadCount(undefined, conv.customer.id), 1)
  const second = await staff.sendMessage(conv.id, 'two')
  assert.equal(await client.getUnreadCount(undefined, conv.customer.id), 2)
  await client.sendMessage(conv.id, 'my own messages are not unread')
  assert.equal(await client.getUnreadCount(undefined, conv.customer.id), 2)
  const marked = await client.markMessagesAsRead([first.id, second.id])
  assert.deepEqual(marked.sort(), [first.id, second.id].sort())
  assert.equal(await client.getUnreadCount(undefined, conv.customer.id), 0)
})

test('a rate limit rejects with ApiError 429 and retryAfter, over HTTP and over the socket', async () => {
  const conv = await conversation()
  const client = managers.open(conv.customer.token)
  for (let i = 0; i < TYPING_LIMIT; i++) {
    await client.sendTypingIndicator(conv.id, undefined, conv.customer.id, i % 2 === 0)
  }
  const overHttp = await client.sendTypingIndicator(conv.id, undefined, conv.customer.id, true).then(
    () => assert.fail('the typing limit was not enforced'),
    (error) => error,
  )
  assert.ok(overHttp instanceof ApiError, String(overHttp))
  assert.equal(overHttp.status, 429)
  assert.equal(overHttp.code, 'rate_limited')
  assert.match(overHttp.message, /typing/)
  assert.ok(overHttp.retryAfter > 0 && overHttp.retryAfter <= 60, `retryAfter ${overHttp.retryAfter}`)

  // the same budget, whichever door: over the socket once the conversation is joined
  const sub = client.subscribeToConversation(conv.id)
  await within(sub.ready)
  const overSocket = await client.sendTypingIndicator(conv.id, undefined, conv.customer.id, true).then(
    () => assert.fail('the typing limit was not enforced over the socket'),
    (error) => error,
  )
  assert.ok(overSocket instanceof ApiError, String(overSocket))
  assert.equal(overSocket.status, 429)
  assert.ok(overSocket.retryAfter > 0 && overSocket.retryAfter <= 60, `retryAfter ${overSocket.retryAfter}`)
})

test('other refusals: ApiError with the envelope, JoinRefusedError for a topic not yours', async () => {
  const conv = await conversation()
  const stranger = await customer()
  const client = managers.open(stranger.token)

  const notFound = await client.getMessages(conv.id).catch((error) => error)
  assert.ok(notFound instanceof ApiError)
  assert.equal(notFound.status, 404)
  assert.equal(notFound.code, 'not_found')
  assert.equal(notFound.retryAfter, undefined)

  const invalid = await client.sendMessage(conv.id, '   ').catch((error) => error)
  assert.ok(invalid instanceof ApiError)
  assert.equal(invalid.status, 422)
  assert.equal(invalid.code, 'validation_error')

  const anonymous = managers.open('not-a-token')
  const unauthorized = await anonymous.getUnreadCount().catch((error) => error)
  assert.ok(unauthorized instanceof ApiError)
  assert.equal(unauthorized.status, 401)
  assert.equal(unauthorized.code, 'unauthorized')

  const unreachable = managers.open(stranger.token, { url: 'http://127.0.0.1:9', requestTimeoutMs: 2000 })
  const down = await unreachable.getUnreadCount().catch((error) => error)
  assert.ok(down instanceof ApiError)
  assert.equal(down.status, 0)
  assert.equal(down.code, 'network_error')

  const seen = new Recorder('stranger')
  const sub = client.subscribeToConversation(conv.id, seen.handlers())
  const refused = await within(sub.ready.then(() => assert.fail('joined a conversation not ours'), (e) => e))
  assert.ok(refused instanceof JoinRefusedError, String(refused))
  assert.match(refused.reason, /Unauthorized/)
  assert.equal(sub.state, 'errored')
  const reported = await seen.expect('error', (e) => e instanceof JoinRefusedError)
  assert.equal(reported, refused)

  const other = client.subscribeToCustomerMessages(uniqueId(), seen.handlers())
  await assert.rejects(within(other.ready), JoinRefusedError)
})
