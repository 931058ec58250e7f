// Drives one @supabase/realtime-js RealtimeClient against a server, for tests/compat.
//
//   node tests/compat/js/run.mjs '<options JSON>'
//
// options: {"url": ws URL ending in /realtime/v1, "apikey": str, "vsn"?: "1.0.0" | "2.0.0",
//           "accessToken"?: str (passed to setAuth before anything joins),
//           "lifetimeMs"?: int (hard exit after this long, default 30000),
//           "traceFrames"?: bool (report every websocket frame's type),
//           "tracePayloads"?: bool (traceFrames, plus each JSON text frame's payload),
//           "debug"?: bool}
//
// stdin carries commands and stdout reports events, one JSON object per line. Every command
// may carry an "id"; commands that complete (everything but "join") answer with
// {"ev": "result", "id": ..., "op": ..., "value": ...} or {"ev": "result", ..., "error": msg}.
//
// Commands:
//   {"op": "join", "channel": name, "topic": sub-topic, "config"?: channel config,
//    "broadcast"?: [event, ...], "postgres"?: [binding, ...], "joinConfig"?: object}
//                                     subscribe; listens to presence, system, the given
//                                     broadcast events ("*" for all) and, for each binding
//                                     ({event, schema, table, filter}), postgres_changes.
//                                     joinConfig is merged into the config the client puts in
//                                     its phx_join (it keeps only the keys it knows otherwise)
//   {"op": "send", "channel", "event", "payload"}      channel.send (resolves "ok", "error", ...)
//   {"op": "track", "channel", "payload"} / {"op": "untrack", "channel"}
//   {"op": "setAuth", "token"}                           client.setAuth(token)
//   {"op": "leave", "channel"}                           client.removeChannel(channel)
//   {"op": "state", "channel"}        channel.state, presenceState() and the postgres binding ids
//   {"op": "exit"}                                       disconnect and exit 0 (also on stdin EOF)
//
// Events:
//   {"ev": "ready"}                                      the client exists; commands are accepted
//   {"ev": "status", "channel", "status", "error"}       subscribe callback (SUBSCRIBED, ...)
//   {"ev": "broadcast", "channel", "event", "payload", "meta"}
//   {"ev": "presence", "channel", "kind": "sync" | "join" | "leave", "key"?, "presences"?,
//    "state"}                                            state is presenceState() after the event
//   {"ev": "system", "channel", "payload"}
//   {"ev": "pg", "channel", "binding": index in "postgres", "payload"}   the callback's argument
//   {"ev": "frame", "dir": "out" | "in", "binary": bool, "kind": first byte of a binary frame,
//    "shape": "array" | "object" and "event" of a JSON text frame,
//    "payload" of a JSON text frame with tracePayloads}         only with traceFrames/tracePayloads
//   {"ev": "fatal", "error"}                             the runner itself failed; it exits 2
//
// The process exits by itself after lifetimeMs (exit code 3) so a stuck test cannot leak it.

import { createInterface } from 'node:readline'
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

const options = JSON.parse(process.argv[2] ?? '{}')

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

function errorText(err) {
  if (err === undefined || err === null) return null
  if (err instanceof Error) return err.message
  return typeof err === 'string' ? err : JSON.stringify(err)
}

let exiting = false
async function shutdown(code) {
  if (exiting) return
  exiting = true
  try {
    await Promise.race([client?.disconnect(), new Promise((r) => setTimeout(r, 1000))])
  } catch {
    // The socket may already be gone; exiting is all that matters now.
  }
  process.stdout.write('', () => process.exit(code))
}

const lifetime = setTimeout(() => {
  emit({ ev: 'fatal', error: `lifetime of ${options.lifetimeMs ?? 30000} ms exceeded` })
  shutdown(3)
}, options.lifetimeMs ?? 30000)
lifetime.unref()

process.on('unhandledRejection', (err) => {
  emit({ ev: 'fatal', error: `unhandled rejection: ${errorText(err)}` })
  shutdown(2)
})
process.on('uncaughtException', (err) => {
  emit({ ev: 'fatal', error: `uncaught exception: ${errorText(err)}` })
  shutdown(2)
})

// With traceFrames, the transport reports the type of every frame it carries, so tests can tell
// which encoding the client chose (realtime-js sends broadcasts as binary kind-3 under vsn 2).
function describeFrame(dir, data, isBinary) {
  if (isBinary) {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data
    return { ev: 'frame', dir, binary: true, kind: bytes[0] }
  }
  let event = null
  let shape = null
  try {
    const decoded = JSON.parse(data.toString())
    shape = Array.isArray(decoded) ? 'array' : typeof decoded
    event = Array.isArray(decoded) ? decoded[3] : decoded.event
    if (options.tracePayloads) {
      const payload = Array.isArray(decoded) ? decoded[4] : decoded.payload
      return { ev: 'frame', dir, binary: false, shape, event, payload }
    }
  } catch {
    // Not JSON: report the frame without an event.
  }
  return { ev: 'frame', dir, binary: false, shape, event }
}

class TracingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args)
    this.on('message', (data, isBinary) => emit(describeFrame('in', data, isBinary)))
  }

  send(data, ...rest) {
    emit(describeFrame('out', data, typeof data !== 'string'))
    return super.send(data, ...rest)
  }
}

const client = new RealtimeClient(options.url, {
  transport: options.traceFrames || options.tracePayloads ? TracingWebSocket : WebSocket,
  params: { apikey: options.apikey },
  ...(options.vsn ? { vsn: options.vsn } : {}),
  timeout: options.timeoutMs ?? 10000,
  ...(options.debug
    ? { logger: (kind, msg, data) => process.stderr.write(`${kind}: ${msg} ${JSON.stringify(data)}\n`) }
    : {}),
})
if (options.accessToken) {
  await client.setAuth(options.accessToken)
}

const channels = new Map()

function channelNamed(name) {
  const channel = channels.get(name)
  if (!channel) throw new Error(`no channel named ${name}`)
  return channel
}

function join({ channel: name, topic, config = {}, broadcast = [], postgres = [], joinConfig }) {
  const channel = client.channel(topic, { config })
  channels.set(name, channel)
  if (joinConfig) {
    // subscribe() rebuilds the join's config from broadcast, presence, postgres_changes, private
    // and postgres_changes_options only; this adds other keys back, as an app would have to.
    const update = channel.updateJoinPayload.bind(channel)
    channel.updateJoinPayload = (payload) =>
      update({ ...payload, config: { ...payload.config, ...joinConfig } })
  }
  postgres.forEach((binding, index) => {
    channel.on('postgres_changes', binding, (payload) => {
      emit({ ev: 'pg', channel: name, binding: index, payload })
    })
  })
  for (const event of broadcast) {
    channel.on('broadcast', { event }, (msg) => {
      emit({
        ev: 'broadcast',
        channel: name,
        event: msg.event,
        payload: msg.payload ?? null,
        meta: msg.meta ?? null,
      })
    })
  }
  channel.on('presence', { event: 'sync' }, () => {
    emit({ ev: 'presence', channel: name, kind: 'sync', state: channel.presenceState() })
  })
  channel.on('presence', { event: 'join' }, ({ key, newPresences }) => {
    emit({
      ev: 'presence',
      channel: name,
      kind: 'join',
      key,
      presences: newPresences,
      state: channel.presenceState(),
    })
  })
  channel.on('presence', { event: 'leave' }, ({ key, leftPresences }) => {
    emit({
      ev: 'presence',
      channel: name,
      kind: 'leave',
      key,
      presences: leftPresences,
      state: channel.presenceState(),
    })
  })
  channel.on('system', {}, (payload) => {
    emit({ ev: 'system', channel: name, payload })
  })
  channel.subscribe((status, err) => {
    emit({ ev: 'status', channel: name, status, error: errorText(err) })
  })
}

async function run(command) {
  switch (command.op) {
    case 'send':
      return await channelNamed(command.channel).send({
        type: 'broadcast',
        event: command.event,
        payload: command.payload,
      })
    case 'track':
      return await channelNamed(command.channel).track(command.payload)
    case 'untrack':
      return await channelNamed(command.channel).untrack()
    case 'setAuth':
      await client.setAuth(command.token)
      return null
    case 'leave':
      return await client.removeChannel(channelNamed(command.channel))
    case 'state': {
      const channel = channelNamed(command.channel)
      const postgres = (channel.bindings.postgres_changes ?? []).map((b) => b.id ?? null)
      return { state: channel.state, presence: channel.presenceState(), postgres }
    }
    default:
      throw new Error(`unknown op ${command.op}`)
  }
}

const input = createInterface({ input: process.stdin })
input.on('line', (line) => {
  if (!line.trim()) return
  let command
  try {
    command = JSON.parse(line)
  } catch (err) {
    emit({ ev: 'fatal', error: `bad command line: ${errorText(err)}` })
    shutdown(2)
    return
  }
  if (command.op === 'exit') {
    shutdown(0)
    return
  }
  if (command.op === 'join') {
    try {
      join(command)
    } catch (err) {
      emit({ ev: 'result', id: command.id ?? null, op: 'join', error: errorText(err) })
    }
    return
  }
  run(command).then(
    (value) => emit({ ev: 'result', id: command.id ?? null, op: command.op, value: value ?? null }),
    (err) => emit({ ev: 'result', id: command.id ?? null, op: command.op, error: errorText(err) }),
  )
})
input.on('close', () => shutdown(0))

emit({ ev: 'ready', vsn: client.vsn })
