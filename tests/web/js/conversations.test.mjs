// Conversation changes (onConversation) on the staff and customer messages topics, and the
// per-conversation topic left as it was (docs/sdk.md "Conversation changes"), against the real
// server. Run by tests/web/test_js_conversations.py, which builds the package and starts it.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import {
  Managers,
  Recorder,
  call,
  conversation,
  customer,
  staffUser,
  within,
} from '../../../clients/js/tests/helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(async () => {
  await managers.close()
})

test('staff hear a status or assignment change made elsewhere', async () => {
  const conv = await conversation()
  const other = await staffUser()
  const staff = managers.open(conv.staff.token)
  const recorder = new Recorder('staff')
  const sub = staff.subscribeToStaffMessages(conv.staff.id, recorder.handlers())
  await within(sub.ready, 5000, 'join')

  // Another agent takes it, then closes it, through the API.
  await call('PATCH', `/api/conversations/${conv.id}`, {
    token: other.token,
    body: { assignedUserId: other.id },
  })
  // (The helper's own assignment, committed just before the join, may come first.)
  const assigned = await recorder.expect(
    'conversation',
    (e) => e.type === 'UPDATE' && e.conversation.assignedUserId === other.id,
  )
  assert.equal(assigned.conversation.id, conv.id)
  assert.equal(assigned.conversation.customerId, conv.customer.id)
  assert.equal(assigned.conversation.assignedUserId, other.id)
  assert.equal(assigned.conversation.status, 'open')
  assert.equal(assigned.conversation.subject, 'Help')
  assert.equal(assigned.previous.assignedUserId, conv.staff.id)
  assert.equal(typeof assigned.position, 'number')

  const mark = recorder.mark()
  await call('PATCH', `/api/conversations/${conv.id}`, { token: other.token, body: { status: 'closed' } })
  const closed = await recorder.expect('conversation', (e) => e.type === 'UPDATE', { since: mark })
  assert.equal(closed.conversation.status, 'closed')
  assert.equal(closed.previous.status, 'open')

  // A new conversation is an INSERT (and carries no previous row).
  const someone = await customer()
  const created = await call('POST', '/api/conversations', {
    token: other.token,
    body: { customerId: someone.id },
  })
  const inserted = await recorder.expect('conversation', (e) => e.conversation.id === created.id)
  assert.equal(inserted.type, 'INSERT')
  assert.equal(inserted.conversation.subject, null)
  assert.equal(inserted.previous, undefined)
  assert.deepEqual(recorder.of('error'), [])
})

test('a customer hears the changes of their own conversations only', async () => {
  const conv = await conversation()
  const stranger = await conversation()
  const client = managers.open(conv.customer.token)
  const recorder = new Recorder('customer')
  const sub = client.subscribeToCustomerMessages(conv.customer.id, recorder.handlers())
  await within(sub.ready, 5000, 'join')
  // The stranger's change commits first: were it delivered, it would come first.
  await call('PATCH', `/api/conversations/${stranger.id}`, { body: { status: 'closed' } })
  await call('PATCH', `/api/conversations/${conv.id}`, { token: conv.customer.token, body: { status: 'resolved' } })
  await recorder.expect('conversation', (e) => e.conversation.status === 'resolved')
  // (The helper's assignment of their own, committed just before the join, may be there too.)
  assert.deepEqual([...new Set(recorder.of('conversation').map((e) => e.conversation.id))], [conv.id])
})

test('the conversation topic joins as before and carries no conversation changes', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const client = managers.open(conv.customer.token)
  const recorder = new Recorder('conversation topic')
  const sub = staff.subscribeToConversation(conv.id, recorder.handlers())
  // Rejected if its conversation_id filter were put on the conversations table.
  await within(sub.ready, 5000, 'join')
  await call('PATCH', `/api/conversations/${conv.id}`, { body: { status: 'pending' } })
  const sent = await client.sendMessage(conv.id, 'after the change')
  // The message follows the change in the feed: anything of the change came before it.
  await recorder.expect('message', (m) => m.id === sent.id)
  assert.deepEqual(recorder.of('conversation'), [])
  assert.deepEqual(recorder.of('error'), [])
})
