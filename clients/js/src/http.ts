/** The HTTP API (docs/api.md): JSON envelopes in and out, errors as {@link ApiError}. */

import { ApiError } from './errors.js'

export type Fetch = typeof fetch

export interface HttpOptions {
  /** The server's HTTP base URL, without a trailing slash. */
  baseUrl: string
  anonKey: string
  /** The current access token (it changes with `setAuth`). */
  token: () => string | null
  fetch: Fetch
  timeoutMs: number
}

type Json = Record<string, unknown>

/** A request body that is not JSON: the bytes of an upload. */
export interface RawBody {
  body: Blob | ArrayBuffer | Uint8Array<ArrayBuffer>
  contentType: string
  timeoutMs?: number
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * `Retry-After` in seconds: delta-seconds (what this server sends) or an HTTP date (what a
 * proxy in front of it may send).
 */
export function parseRetryAfter(header: string | null, now: number = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds)
  const at = Date.parse(header)
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000)
}

export class Http {
  constructor(private readonly options: HttpOptions) {}

  /**
   * `method path` with an optional JSON body; resolves to the envelope's `data`. Rejects with
   * ApiError: the server's code and message, or status 0 when no answer came (network down,
   * timeout), so callers catch one class. `raw`: a body sent as is instead (an upload), with
   * its content type and, for a large one, a longer timeout.
   */
  async request(method: string, path: string, body?: unknown, raw?: RawBody): Promise<unknown> {
    const { baseUrl, anonKey, token, fetch } = this.options
    const timeoutMs = raw?.timeoutMs ?? this.options.timeoutMs
    const headers: Record<string, string> = { apikey: anonKey, Accept: 'application/json' }
    const bearer = token()
    if (bearer) headers['Authorization'] = `Bearer ${bearer}`
    const init: RequestInit = { method, headers }
    if (raw !== undefined) {
      headers['Content-Type'] = raw.contentType
      init.body = raw.body
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), timeoutMs)
    init.signal = controller.signal
    let response: Response
    let text: string
    try {
      response = await fetch(baseUrl + path, init)
      text = await response.text()
    } catch (cause) {
      const message = controller.signal.aborted
        ? `${method} ${path}: no answer within ${timeoutMs} ms`
        : `${method} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`
      throw new ApiError(0, 'network_error', message, undefined, { cause })
    } finally {
      clearTimeout(timer)
    }
    let envelope: unknown = undefined
    try {
      envelope = text === '' ? undefined : JSON.parse(text)
    } catch {
      // not JSON (a proxy's error page): reported below with the HTTP status
    }
    if (response.ok && isObject(envelope) && envelope['success'] !== false) {
      return envelope['data']
    }
    const error = isObject(envelope) && isObject(envelope['error']) ? envelope['error'] : {}
    throw new ApiError(
      response.status,
      typeof error['code'] === 'string' ? error['code'] : 'http_error',
      typeof error['message'] === 'string'
        ? error['message']
        : response.statusText || `HTTP ${response.status}`,
      parseRetryAfter(response.headers.get('Retry-After')),
    )
  }
}
