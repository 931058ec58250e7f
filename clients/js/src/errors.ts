/**
 * The errors the client throws or hands to `onError`, one class per situation a caller may
 * want to tell apart (the Python SDK's `realtime_messaging.client.errors`, same names).
 */

/** Base of every error of this client. */
export class RealtimeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/**
 * The socket dropped or could not connect. Transient: the client keeps reconnecting and every
 * subscription resumes where it stopped.
 */
export class ConnectionLostError extends RealtimeError {}

/** The server refused a channel join; `reason` is its `"<Code>: <message>"`. */
export class JoinRefusedError extends RealtimeError {
  readonly topic: string
  readonly reason: string

  constructor(topic: string, reason: string) {
    super(`${topic}: ${reason}`)
    this.topic = topic
    this.reason = reason
  }
}

/** The server reported an error on a channel (a system error, or the channel crashed). */
export class ChannelError extends RealtimeError {
  readonly topic: string

  constructor(topic: string, message: string) {
    super(`${topic}: ${message}`)
    this.topic = topic
  }
}

/**
 * The server closed the channel (for instance its token expired or was revoked);
 * `manager.setAuth(newToken)` joins it again, resuming where it stopped.
 */
export class ChannelClosedError extends ChannelError {}

/**
 * Changes after `position` were pruned before the client could resume (the outage outlasted
 * the server's change retention): reload the state, live changes continue.
 */
export class HistoryLostError extends RealtimeError {
  readonly topic: string
  readonly position: number | null

  constructor(topic: string, position: number | null) {
    super(`${topic}: history after position ${position} is lost; reload`)
    this.topic = topic
    this.position = position
  }
}

/**
 * An HTTP API call failed: the server's `{success: false, error: {code, message}}` envelope,
 * with `retryAfter` in seconds when it sent `Retry-After` (rate limits, 503). A request that
 * never got an answer has `status` 0 and `code` `"network_error"`.
 */
export class ApiError extends RealtimeError {
  readonly status: number
  readonly code: string
  readonly retryAfter: number | undefined

  constructor(
    status: number,
    code: string,
    message: string,
    retryAfter?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.status = status
    this.code = code
    this.retryAfter = retryAfter
  }
}
