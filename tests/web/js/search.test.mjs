// search, listConversations filters and getConversationCounts (docs/sdk.md) against the real
// server. Run by tests/web/test_js_search.py, which builds the package and starts the server.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ApiError } from '../../../clients/js/dist/index.js'
import { Managers, conversation, uniqueId, within } from '../../../clients/js/tests/helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(async () => {
  await managers.close()
})

test('search pages ranked matches with escaped, highlighted snippets', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const customer = managers.open(conv.customer.token)
  const word = `w${uniqueId().replaceAll('-', '').slice(0, 12)}`
  await customer.sendMessage(conv.id, `${word} & "quoted" once`)
  await customer.sendMessage(conv.id, `${word} ${word} twice`)
  await customer.sendMessage(conv.id, 'nothing here')

  const first = await within(staff.search(word, { limit: 1 }))
  assert.equal(first.results.length, 1)
  assert.equal(first.results[0].snippet, `<mark>${word}</mark> <mark>${word}</mark> twice`)
  assert.ok(first.nextCursor)
  const second = await within(staff.search(word, { limit: 1, cursor: first.nextCursor }))
  assert.equal(second.results[0].snippet, `<mark>${word}</mark> &amp; &quot;quoted&quot; once`)
  assert.ok(first.results[0].rank > second.results[0].rank)
  assert.equal(second.nextCursor, null)
  const own = await within(customer.search(word, { conversationId: conv.id }))
  assert.equal(own.results.length, 2)
})

test('the conversation list filters and the counts', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const customer = managers.open(conv.customer.token)
  await customer.sendMessage(conv.id, 'hello')

  const mine = await within(staff.listConversations({ assignee: 'mine', unread: true, status: 'open' }))
  assert.deepEqual(mine.conversations.map((c) => c.id), [conv.id])
  assert.equal(mine.conversations[0].lastMessage.content, 'hello')
  const none = await within(staff.listConversations({ assignee: 'mine', status: 'closed' }))
  assert.deepEqual(none.conversations, [])
  const counts = await within(staff.getConversationCounts())
  assert.equal(counts.status, 'open')
  assert.equal(counts.mine, 1)
  const theirs = await within(customer.getConversationCounts('open'))
  assert.deepEqual(theirs.byStatus, { open: 1, pending: 0, resolved: 0, closed: 0 })
  assert.equal(theirs.mine, null)
  await assert.rejects(customer.listConversations({ assignee: 'mine' }), (error) => {
    assert.ok(error instanceof ApiError)
    assert.equal(error.status, 422)
    return true
  })
})
