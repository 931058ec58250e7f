// Presence from the live presence:<conversation_id> channel: joining it makes a participant
// present, explicit states follow, closing the connection turns them offline.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { Managers, Recorder, conversation, customer, staffUser, within } from './helpers.mjs'

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(() => managers.close())

test('subscribeToPresence, isOnline and getPresence follow the participants', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const customer = managers.open(conv.customer.token)
  const seenByStaff = new Recorder('staff')
  const seenByCustomer = new Recorder('customer')
  const onPresence = (p) => seenByStaff.add('presence', p)
  const spres = staff.subscribeToPresence(conv.id, conv.staff.id, undefined, onPresence)
  await within(spres.ready)
  assert.equal(staff.isOnline(conv.id, conv.customer.id), false)

  const cpres = customer.subscribeToPresence(conv.id, undefined, conv.customer.id, seenByCustomer.handlers())
  await within(cpres.ready)
  // the staff user sees the customer arrive; the customer sees the staff user already there
  await seenByStaff.expect('presence', (p) => p.customerId === conv.customer.id && p.status === 'online')
  assert.equal(staff.isOnline(conv.id, conv.customer.id), true)
  await seenByCustomer.expect('presence', (p) => p.userId === conv.staff.id && p.status === 'online')
  assert.equal(customer.isOnline(conv.id, conv.staff.id), true)
  const listed = staff.getPresence(conv.id)
  assert.deepEqual(
    listed.map((p) => p.userId ?? p.customerId).sort(),
    [conv.customer.id, conv.staff.id].sort(),
  )
  for (const p of listed) {
    assert.equal(p.status, 'online')
    assert.equal(typeof p.lastSeenAt, 'string')
  }

  // explicit states reach the staff user, with the metadata
  const mark = seenByStaff.mark()
  const row = await customer.updatePresence(undefined, conv.customer.id, 'away', { deviceType: 'test' })
  assert.equal(row.status, 'away')
  assert.equal(row.customerId, conv.customer.id)
  const away = await seenByStaff.expect(
    'presence',
    (p) => p.customerId === conv.customer.id && p.status === 'away',
    { since: mark },
  )
  assert.equal(away.id, row.id)
  assert.deepEqual(away.metadata, { deviceType: 'test' })
  assert.equal(staff.isOnline(conv.id, conv.customer.id), false)
  const back = seenByStaff.mark()
  await customer.updatePresence(undefined, conv.customer.id, 'online')
  await seenByStaff.expect('presence', (p) => p.customerId === conv.customer.id && p.status === 'online', {
    since: back,
  })
  assert.equal(staff.isOnline(conv.id, conv.customer.id), true)

  // gone: the customer's connection closes, and (after the server's grace) they are offline
  const gone = seenByStaff.mark()
  await customer.close()
  await seenByStaff.expect('presence', (p) => p.customerId === conv.customer.id && p.status === 'offline', {
    since: gone,
  })
  assert.equal(staff.isOnline(conv.id, conv.customer.id), false)
  assert.deepEqual(seenByCustomer.of('error'), [])
})

test('subscribeToCustomersPresence follows the customers named, and only them', async () => {
  // A staff list shows many conversations; only the open one has a presence channel.
  const conv = await conversation()
  const [named, other] = await Promise.all([customer(), customer()])
  const staff = managers.open(conv.staff.token)
  const seen = new Recorder('staff')
  const sub = staff.subscribeToCustomersPresence([named.id, 'not-a-uuid', named.id], (p) => seen.add('presence', p))
  await within(sub.ready)
  assert.match(sub.topic, /^customers-presence:/)

  // Changes arrive in commit order: the other customer's comes first and must never show.
  await managers.open(other.token).updatePresence(undefined, other.id, 'online')
  const namedManager = managers.open(named.token)
  await namedManager.updatePresence(undefined, named.id, 'online')
  await seen.expect('presence', (p) => p.customerId === named.id && p.status === 'online')
  await namedManager.updatePresence(undefined, named.id, 'away')
  await seen.expect('presence', (p) => p.customerId === named.id && p.status === 'away')
  assert.deepEqual(
    seen.of('presence').map((p) => p.customerId),
    [named.id, named.id],
  )
})

test('subscribeToStaffPresence shows a customer its agents, and no other staff', async () => {
  // A customer's list shows its conversations' agents; another agent it names is not its own.
  const conv = await conversation()
  const stranger = await staffUser()
  const mine = managers.open(conv.customer.token)
  const seen = new Recorder('customer')
  const sub = mine.subscribeToStaffPresence([stranger.id, 'not-a-uuid', conv.staff.id], (p) => seen.add('presence', p))
  await within(sub.ready)
  assert.match(sub.topic, /^staff-presence:/)

  // Changes arrive in commit order: the stranger's comes first and must never show.
  await managers.open(stranger.token).updatePresence(stranger.id, undefined, 'away')
  const agent = managers.open(conv.staff.token)
  await agent.updatePresence(conv.staff.id, undefined, 'away')
  await seen.expect('presence', (p) => p.userId === conv.staff.id && p.status === 'away')
  await agent.updatePresence(conv.staff.id, undefined, 'online')
  await seen.expect('presence', (p) => p.userId === conv.staff.id && p.status === 'online')
  assert.deepEqual(
    seen.of('presence').map((p) => p.userId),
    [conv.staff.id, conv.staff.id],
  )
})
