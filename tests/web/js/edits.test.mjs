// editMessage / deleteMessage (docs/sdk.md): the edited message and the tombstone reach onMessage
// as UPDATEs, live and, for a subscription that was away, when it resumes. Run by
// tests/web/test_js_edits.py, which builds the package and starts the servers.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ApiError, ConnectionLostError } from '../../../clients/js/dist/index.js'
import {
  Managers,
  RESTART_URL,
  Recorder,
  conversation,
  restartServer,
  within,
} from '../../../clients/js/tests/helpers.mjs'

/** A timestamp to the microsecond: PostgreSQL's text drops trailing zeros of the fraction,
 * Python's isoformat keeps six digits, so equal instants may be spelled apart. */
function instant(text) {
  const [, whole, fraction = '', zone] = /^([^.+Z]+)(?:\.(\d+))?(.*)$/.exec(text)
  return `${whole}.${fraction.padEnd(6, '0')}${zone}`
}

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(async () => {
  await managers.close()
  await restartServer('start') // whatever happened, leave it running
})

test('edits and deletes reach onMessage live and after a resume', async () => {
  const conv = await conversation()
  // The staff user is on the server that restarts; the customer stays on the other one.
  const staff = managers.open(conv.staff.token, { url: RESTART_URL })
  const customer = managers.open(conv.customer.token)
  const seen = new Recorder('staff')
  const own = new Recorder('customer')
  const sub = staff.subscribeToConversation(conv.id, seen.handlers())
  const csub = customer.subscribeToCustomerMessages(conv.customer.id, own.handlers())
  await within(Promise.all([sub.ready, csub.ready]))

  const sent = await customer.sendMessage(conv.id, 'helo')
  const other = await customer.sendMessage(conv.id, 'oops')
  const first = await seen.expect('message', (m) => m.id === other.id)
  assert.equal(first.change, 'INSERT')
  assert.equal(first.editedAt, undefined)
  assert.equal(first.deletedAt, undefined)

  // Live: the edit, on both sides, with the same id, sender and time.
  const edited = await customer.editMessage(sent.id, 'hello')
  assert.equal(edited.change, 'UPDATE')
  assert.equal(edited.content, 'hello')
  assert.ok(!Number.isNaN(Date.parse(edited.editedAt)))
  for (const recorder of [seen, own]) {
    const got = await recorder.expect('message', (m) => m.id === sent.id && m.change === 'UPDATE')
    assert.equal(got.content, 'hello')
    assert.equal(instant(got.createdAt), instant(edited.createdAt))
    assert.equal(got.senderId, conv.customer.id)
    assert.ok(got.editedAt)
    assert.equal(got.deletedAt, undefined)
  }

  // Away: an edit and a delete while the staff user's server is down arrive on the resume.
  await restartServer('stop')
  await seen.expect('error', (e) => e instanceof ConnectionLostError)
  await customer.editMessage(sent.id, 'hello again')
  const tomb = await customer.deleteMessage(other.id)
  assert.equal(tomb.content, '')
  assert.deepEqual(tomb.attachments, [])
  assert.ok(tomb.deletedAt)
  await restartServer('start')
  const rejoin = await seen.expect('rejoin', () => true, { timeout: 15_000 })
  assert.equal(rejoin.complete, true)
  const updates = seen.of('message', (m) => m.change === 'UPDATE').map((m) => [m.id, m.content, Boolean(m.deletedAt)])
  assert.deepEqual(updates, [
    [sent.id, 'hello', false],
    [sent.id, 'hello again', false],
    [other.id, '', true],
  ])

  // Deleting again gives the same tombstone; a deleted message cannot be edited.
  assert.equal((await customer.deleteMessage(other.id)).deletedAt, tomb.deletedAt)
  await assert.rejects(customer.editMessage(other.id, 'back'), (error) => {
    assert.ok(error instanceof ApiError)
    assert.equal(error.status, 409)
    assert.equal(error.code, 'message_deleted')
    return true
  })
  // Staff may not rewrite the customer's words.
  await assert.rejects(staff.editMessage(sent.id, 'changed'), (error) => {
    assert.ok(error instanceof ApiError)
    assert.equal(error.status, 403)
    return true
  })
  // History shows the tombstone in its place.
  const page = await staff.getMessages(conv.id)
  assert.deepEqual(
    page.messages.map((m) => [m.id, m.content, Boolean(m.editedAt), Boolean(m.deletedAt)]),
    [
      [other.id, '', false, true],
      [sent.id, 'hello again', true, false],
    ],
  )
})
