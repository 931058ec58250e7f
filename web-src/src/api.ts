/**
 * The few HTTP calls the pages make themselves (the manager makes the others): same origin,
 * `Authorization: Bearer <token>`, the `{success, data | error}` envelope of docs/api.md.
 */
import type {
  Conversation,
  ConversationCounts,
  ConversationStatus,
  HistoryMessage,
  ListFilter,
  Me,
  Page,
  PresenceRow,
  SearchResult,
  Unread,
  WebConfig,
} from './types.ts';

/** A refusal from the server, or `status: 0` when it could not be reached. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter: number | undefined;

  constructor(status: number, code: string, message: string, retryAfter?: number) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The HTTP status of an error from these calls or from the manager (its `ApiError`), if any. */
export function statusOf(error: unknown): number | undefined {
  if (typeof error === 'object' && error !== null && 'status' in error) {
    const status = (error as { status: unknown }).status;
    if (typeof status === 'number') return status;
  }
  return undefined;
}

/** Seconds to wait before retrying a 429/503, when the server said so. */
export function retryAfterOf(error: unknown): number | undefined {
  if (typeof error === 'object' && error !== null) {
    const value = (error as { retryAfter?: unknown }).retryAfter;
    if (typeof value === 'number' && value >= 0) return value;
  }
  return undefined;
}

export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

function parseRetryAfter(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

async function request<T>(method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token) headers['Authorization'] = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new HttpError(0, 'network', `The server cannot be reached (${messageOf(error)})`);
  }
  let json: unknown = null;
  try {
    json = await response.json();
  } catch {
    // not JSON: handled below
  }
  const envelope = json as { success?: boolean; data?: T; error?: { code?: string; message?: string } } | null;
  if (!response.ok || envelope === null || envelope.success === false) {
    const code = envelope?.error?.code ?? 'http_error';
    const message = envelope?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new HttpError(response.status, code, message, parseRetryAfter(response.headers.get('Retry-After')));
  }
  return (envelope.success === true ? envelope.data : json) as T;
}

/** `GET /web-config.json`: where the realtime server is and its anon key. */
export async function loadWebConfig(): Promise<WebConfig> {
  return request<WebConfig>('GET', '/web-config.json', null);
}

/** The calls of one signed-in page. */
export class Api {
  constructor(readonly token: string) {}

  me(): Promise<Me> {
    return request<Me>('GET', '/api/me', this.token);
  }

  /** A page of conversations, latest activity first; a staff filter narrows it (docs/api.md, queues). */
  async conversations(limit = 50, before?: string | null, filter?: ListFilter | null): Promise<Page<Conversation>> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before) query.set('before', before);
    if (filter) {
      query.set('status', filter.status);
      if (filter.queue === 'mine' || filter.queue === 'unassigned') query.set('assignee', filter.queue);
      if (filter.queue === 'unread') query.set('unread', 'true');
    }
    const data = await request<{ conversations: Conversation[]; nextCursor: string | null }>(
      'GET',
      `/api/conversations?${query}`,
      this.token,
    );
    return { items: data.conversations, nextCursor: data.nextCursor };
  }

  /** How many conversations each queue holds in `status`, and per status. */
  counts(status: ConversationStatus): Promise<ConversationCounts> {
    return request<ConversationCounts>('GET', `/api/conversations/counts?${new URLSearchParams({ status })}`, this.token);
  }

  /** Messages matching `q` (web-search syntax), best first. */
  async search(q: string, limit = 20): Promise<SearchResult[]> {
    const query = new URLSearchParams({ q, limit: String(limit) });
    const data = await request<{ results: SearchResult[]; nextCursor: string | null }>(
      'GET',
      `/api/search?${query}`,
      this.token,
    );
    return data.results;
  }

  conversation(id: string): Promise<Conversation> {
    return request<Conversation>('GET', `/api/conversations/${encodeURIComponent(id)}`, this.token);
  }

  openConversation(subject: string | null): Promise<Conversation> {
    return request<Conversation>('POST', '/api/conversations', this.token, { subject });
  }

  /** History, newest first (`delivery` is the recipient's delivery row). */
  async messages(conversationId: string, limit = 50, before?: string | null): Promise<Page<HistoryMessage>> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before) query.set('before', before);
    const data = await request<{ messages: HistoryMessage[]; nextCursor: string | null }>(
      'GET',
      `/api/conversations/${encodeURIComponent(conversationId)}/messages?${query}`,
      this.token,
    );
    return { items: data.messages, nextCursor: data.nextCursor };
  }

  /** Unread messages of the caller: the total and per conversation (or of one conversation). */
  unread(conversationId?: string): Promise<Unread> {
    const query = conversationId ? `?${new URLSearchParams({ conversationId })}` : '';
    return request<Unread>('GET', `/api/unread${query}`, this.token);
  }

  async presence(conversationId: string): Promise<PresenceRow[]> {
    const data = await request<{ participants: PresenceRow[] }>(
      'GET',
      `/api/conversations/${encodeURIComponent(conversationId)}/presence`,
      this.token,
    );
    return data.participants;
  }
}
