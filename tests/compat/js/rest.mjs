// Drives @supabase/supabase-js's REST client (PostgREST) against a server, for tests/rest.
//
//   node tests/compat/js/rest.mjs '<options JSON>'
//
// options: {"url": the server's base URL, "anonKey": str, "token"?: str (sent as the user's
//           access token), "calls": [{"name": str, "call": one of the calls below}, ...]}
//
// Each call runs in order and prints one line: {"name", "data", "error", "count", "status"},
// what the client returned. Calls (each an object with "op" and its arguments):
//   {"op": "select", "table", "columns"?, "filters"?: [[method, ...args]], "order"?: [col, opts],
//    "range"?: [from, to], "limit"?: n, "count"?: "exact", "head"?: bool, "single"?: bool,
//    "maybeSingle"?: bool}
//   {"op": "insert" | "upsert", "table", "values", "options"?, "select"?: str, "single"?: bool}
//   {"op": "update", "table", "values", "filters", "select"?: str, "single"?: bool}
//   {"op": "delete", "table", "filters", "select"?: str}
//   {"op": "rpc", "fn", "args"}
// filters are builder methods applied in order: ["eq", "id", 1], ["in", "id", [..]],
// ["or", "a.eq.1,b.eq.2"], ["not", "c", "is", null], ["ilike", "d", "%x%"] ...

import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const options = JSON.parse(process.argv[2] ?? '{}')
const client = createClient(options.url, options.anonKey, {
  auth: { persistSession: false, autoRefreshToken: false },
  // Node 20 has no global WebSocket; only REST is used here, but the client builds its realtime
  // client up front.
  realtime: { transport: WebSocket },
  ...(options.token ? { accessToken: async () => options.token } : {}),
})

function applyFilters(query, filters) {
  for (const [method, ...args] of filters ?? []) query = query[method](...args)
  return query
}

function build(call) {
  const table = () => client.from(call.table)
  let query
  switch (call.op) {
    case 'select':
      query = table().select(call.columns ?? '*', {
        ...(call.count ? { count: call.count } : {}),
        ...(call.head ? { head: true } : {}),
      })
      query = applyFilters(query, call.filters)
      if (call.order) query = query.order(...call.order)
      if (call.range) query = query.range(...call.range)
      if (call.limit !== undefined) query = query.limit(call.limit)
      break
    case 'insert':
      query = table().insert(call.values, call.options)
      break
    case 'upsert':
      query = table().upsert(call.values, call.options)
      break
    case 'update':
      query = applyFilters(table().update(call.values), call.filters)
      break
    case 'delete':
      query = applyFilters(table().delete(), call.filters)
      break
    case 'rpc':
      return client.rpc(call.fn, call.args)
    default:
      throw new Error(`unknown op ${call.op}`)
  }
  if (call.select !== undefined) query = query.select(call.select)
  if (call.single) query = query.single()
  if (call.maybeSingle) query = query.maybeSingle()
  return query
}

for (const { name, call } of options.calls ?? []) {
  const { data, error, count, status } = await build(call)
  process.stdout.write(
    JSON.stringify({ name, data: data ?? null, error: error ?? null, count: count ?? null, status }) + '\n'
  )
}
