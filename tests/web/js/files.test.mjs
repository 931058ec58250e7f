// uploadAttachment / getAttachmentUrl and an attachment-only sendMessage (docs/files.md) against
// the real server. Run by tests/web/test_js_files.py, which builds the package and starts it.

import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { ApiError } from '../../../clients/js/dist/index.js'
import { Managers, Recorder, conversation, within } from '../../../clients/js/tests/helpers.mjs'

// The smallest PNG: the server checks an image's first bytes against its declared type.
const PNG = Uint8Array.from(
  atob(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  ),
  (c) => c.charCodeAt(0),
)

let managers
beforeEach(() => {
  managers = new Managers()
})
afterEach(async () => {
  await managers.close()
})

test('a customer uploads an image, sends it alone, and staff download it', async () => {
  const conv = await conversation()
  const staff = managers.open(conv.staff.token)
  const customer = managers.open(conv.customer.token)
  const seen = new Recorder('staff')
  const sub = staff.subscribeToConversation(conv.id, seen.handlers())
  await within(sub.ready)

  const uploaded = await within(
    customer.uploadAttachment(conv.id, new Blob([PNG], { type: 'image/png' }), {
      filename: '../../hello.png',
    }),
  )
  assert.equal(uploaded.contentType, 'image/png')
  assert.equal(uploaded.size, PNG.length)
  const sent = await customer.sendMessage(conv.id, '', { attachmentIds: [uploaded.id] })
  const got = await seen.expect('message', (m) => m.id === sent.id)
  assert.equal(got.content, '')
  assert.equal(got.attachments.length, 1)

  const link = await within(staff.getAttachmentUrl(uploaded.id))
  const response = await fetch(link.url)
  assert.equal(response.status, 200)
  assert.equal(response.headers.get('x-content-type-options'), 'nosniff')
  assert.match(response.headers.get('content-disposition'), /^attachment;/)
  assert.deepEqual(new Uint8Array(await response.arrayBuffer()), PNG)
})

test('a file whose bytes are not what it claims is refused', async () => {
  const conv = await conversation()
  const customer = managers.open(conv.customer.token)
  await assert.rejects(
    customer.uploadAttachment(conv.id, new TextEncoder().encode('not a png'), {
      filename: 'x.png',
      contentType: 'image/png',
    }),
    (e) => e instanceof ApiError && e.status >= 400 && e.status < 500,
  )
})
