// What search and the inbox's conversation list return (GET /api/search, GET /api/conversations,
// GET /api/conversations/counts; docs/api.md "Search and queues").

export type ConversationStatus = 'open' | 'pending' | 'resolved' | 'closed'

export interface SearchOptions {
  /** Only this conversation. */
  conversationId?: string
  /** 1 to 50 (default 20). */
  limit?: number
  /** The `nextCursor` of the previous page. */
  cursor?: string | null
}

/** One message found. `snippet` is HTML: the text escaped, the matched words in `<mark>`. */
export interface SearchResult {
  messageId: string
  conversationId: string
  senderType: 'customer' | 'staff'
  senderId: string
  createdAt: string
  rank: number
  snippet: string
}

export interface SearchPage {
  /** Best match first. */
  results: SearchResult[]
  nextCursor: string | null
}

export interface ConversationFilters {
  status?: ConversationStatus
  /** A staff user's id, `'mine'` (staff only) or `'unassigned'`. */
  assignee?: string
  /** true: with a message the caller has not read; false: without. */
  unread?: boolean
  /** 1 to 200 (default 50). */
  limit?: number
  /** The `nextCursor` of the previous page. */
  before?: string | null
}

/** A conversation as lists show it: with its customer's name and its latest message. */
export interface ConversationEntry {
  id: string
  customerId: string
  subject: string | null
  status: ConversationStatus
  assignedUserId: string | null
  createdAt: string
  updatedAt: string
  customerName: string | null
  lastMessage: {
    id: string
    content: string
    senderType: 'customer' | 'staff'
    senderId: string
    createdAt: string
  } | null
}

export interface ConversationPage {
  /** Latest activity (the last message, or a change to the conversation) first. */
  conversations: ConversationEntry[]
  nextCursor: string | null
}

/** How many conversations each inbox filter holds in `status`, and per status. */
export interface ConversationCounts {
  status: ConversationStatus
  all: number
  /** null for a customer. */
  mine: number | null
  unassigned: number
  unread: number | null
  byStatus: Record<ConversationStatus, number>
}
