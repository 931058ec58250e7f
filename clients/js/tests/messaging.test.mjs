// A customer and a staff user exchange messages live, both ways: camelCase events, read
// receipts, and delivery status from sent to delivered (acknowledged by the recipient's
// manager by itself) to read.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { Managers, Recorder, conversation, uniqueId, within } from './helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(() => managers.close())

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

test('customer and staff exchange messages, receipts and delivery status live', async () => {
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  const staff = managers.open(conv.staff.token)
  const seenByCustomer = new Recorder('customer')
  const seenByStaff = new Recorder('staff')
  const csub = customer.subscribeToConversation(conv.id, seenByCustomer.handlers())
  const ssub = staff.subscribeToStaffMessages(conv.staff.id, seenByStaff.handlers())
  assert.equal(csub.topic, `conversation:${conv.id}`)
  assert.equal(ssub.topic, `staff:${conv.staff.id}:messages`)
  await within(Promise.all([csub.ready, ssub.ready]), 5000, 'joins')
  assert.equal(csub.state, 'joined')
  assert.equal(ssub.state, 'joined')

  // staff -> customer
  const sent = await staff.sendMessage(conv.id, 'Hello from staff')
  assert.equal(sent.senderType, 'staff')
  const got = await seenByCustomer.expect('message', (m) => m.id === sent.id)
  assert.deepEqual(Object.keys(got).sort(), [
    'attachments', 'change', 'content', 'conversationId', 'createdAt',
    'id', 'position', 'senderId', 'senderType',
  ])
  assert.equal(got.content, 'Hello from staff')
  assert.equal(got.conversationId, conv.id)
  assert.equal(got.senderType, 'staff')
  assert.equal(got.senderId, conv.staff.id)
  assert.equal(got.change, 'INSERT')
  assert.deepEqual(got.attachments, [])
  assert.ok(Number.isInteger(got.position) && got.position > 0)
  assert.ok(!Number.isNaN(Date.parse(got.createdAt)))

  // sent, then delivered: the customer's manager acknowledged it without being asked
  const initial = await seenByStaff.expect('deliveryStatus', (d) => d.messageId === sent.id)
  assert.equal(initial.status, 'sent')
  assert.equal(initial.recipientType, 'customer')
  assert.equal(initial.recipientId, conv.customer.id)
  assert.equal(initial.conversationId, conv.id)
  assert.match(initial.id, UUID)
  const delivered = await seenByStaff.expect(
    'deliveryStatus',
    (d) => d.messageId === sent.id && d.status === 'delivered',
  )
  assert.equal(delivered.change, 'UPDATE')
  assert.ok(delivered.deliveredAt)

  // read: a receipt and the last delivery status
  await customer.markMessageAsRead(sent.id, undefined, conv.customer.id)
  const receipt = await seenByStaff.expect('readReceipt', (r) => r.messageId === sent.id)
  assert.equal(receipt.readByCustomerId, conv.customer.id)
  assert.equal(receipt.readByUserId, undefined)
  assert.equal(receipt.conversationId, conv.id)
  assert.ok(receipt.readAt)
  const read = await seenByStaff.expect(
    'deliveryStatus',
    (d) => d.messageId === sent.id && d.status === 'read',
  )
  assert.ok(read.readAt)
  assert.deepEqual(
    seenByStaff.of('deliveryStatus', (d) => d.messageId === sent.id).map((d) => d.status),
    ['sent', 'delivered', 'read'],
  )

  // customer -> staff, with attachments and an idempotent client message id
  const clientMessageId = uniqueId()
  const attachments = [{ name: 'invoice.pdf', size: 1234 }]
  const reply = await customer.sendMessage(conv.id, 'Hi from the customer', { attachments, clientMessageId })
  const again = await customer.sendMessage(conv.id, 'Hi from the customer', { attachments, clientMessageId })
  assert.equal(again.id, reply.id, 'a retried send returns the first message')
  const fromCustomer = await seenByStaff.expect('message', (m) => m.id === reply.id)
  assert.equal(fromCustomer.senderType, 'customer')
  assert.equal(fromCustomer.senderId, conv.customer.id)
  assert.equal(fromCustomer.clientMessageId, clientMessageId)
  assert.deepEqual(fromCustomer.attachments, attachments)
  // the assigned staff user's manager acknowledges it; the customer sees the status move
  await seenByCustomer.expect('deliveryStatus', (d) => d.messageId === reply.id && d.status === 'delivered')
  await staff.markMessagesAsRead([reply.id])
  const staffReceipt = await seenByCustomer.expect('readReceipt', (r) => r.messageId === reply.id)
  assert.equal(staffReceipt.readByUserId, conv.staff.id)
  await seenByCustomer.expect('deliveryStatus', (d) => d.messageId === reply.id && d.status === 'read')

  // each message once, in the order sent, on both sides
  const ids = (recorder) => recorder.of('message', (m) => m.conversationId === conv.id).map((m) => m.id)
  assert.deepEqual(ids(seenByCustomer), [sent.id, reply.id])
  assert.deepEqual(ids(seenByStaff), [sent.id, reply.id])

  // history: newest first, with the delivery status
  const page = await customer.getMessages(conv.id, { limit: 1 })
  assert.deepEqual(page.messages.map((m) => m.id), [reply.id])
  assert.equal(page.messages[0].deliveryStatus, 'read')
  assert.equal(typeof page.nextCursor, 'string')
  const older = await customer.getMessages(conv.id, { limit: 5, before: page.nextCursor })
  assert.deepEqual(older.messages.map((m) => m.id), [sent.id])
  assert.equal(older.nextCursor, null)

  assert.deepEqual(seenByCustomer.of('error'), [])
  assert.deepEqual(seenByStaff.of('error'), [])
  assert.deepEqual(customer.recorder.of('error'), [])
  assert.deepEqual(staff.recorder.of('error'), [])
})

test('subscriptions on one topic share its channel; unsubscribe leaves it with the last one', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const first = new Recorder('first')
  const second = new Recorder('second')
  const a = staff.subscribeToConversation(conv.id, first.handlers())
  const b = staff.subscribeToConversation(conv.id, second.handlers())
  await within(Promise.all([a.ready, b.ready]))
  const one = await staff.sendMessage(conv.id, 'one')
  await first.expect('message', (m) => m.id === one.id)
  await second.expect('message', (m) => m.id === one.id)

  await a.unsubscribe()
  assert.equal(a.state, 'closed')
  assert.equal(b.state, 'joined')
  const two = await staff.sendMessage(conv.id, 'two')
  await second.expect('message', (m) => m.id === two.id)
  assert.deepEqual(first.of('message').map((m) => m.id), [one.id])

  assert.equal(await staff.unsubscribe(`conversation:${conv.id}`), true)
  assert.equal(b.state, 'closed')
  assert.equal(await staff.unsubscribe(`conversation:${conv.id}`), false)
})
