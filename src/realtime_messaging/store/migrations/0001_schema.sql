-- 0001_schema: the tables of the original design, plus the ones it left implicit.
--
-- Every rule that a single row can check is a constraint here, with a stable name that error
-- handlers can match on. Rules that must look at other rows (is the sender a participant, may
-- the delivery status move this way) live in the triggers of 0002_functions and raise errors
-- that carry a pseudo-constraint name of the same style. docs/database.md lists them all.
--
-- Only core PostgreSQL (15 or newer): gen_random_uuid() is core; UNIQUE NULLS NOT DISTINCT is 15+.
-- Every name is schema-qualified: the migrating role may have a schema of its own name early in
-- its search_path.

-- People -----------------------------------------------------------------------------------------

-- Portal customers. Identity comes from portal tokens, not from the e-mail address, so e-mail is
-- contact data and deliberately not unique.
CREATE TABLE public.customers (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Staff users (agents). A staff JWT's "sub" is one of these ids.
CREATE TABLE public.users (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Conversations and messages ---------------------------------------------------------------------

-- One support thread, owned by one customer for its whole life (trigger
-- conversations_customer_id_immutable). Deleting the customer deletes their conversations.
CREATE TABLE public.conversations (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id      uuid        NOT NULL
                                 CONSTRAINT conversations_customer_id_fkey
                                 REFERENCES public.customers (id) ON DELETE CASCADE,
    subject          text,
    status           text        NOT NULL DEFAULT 'open'
                                 CONSTRAINT conversations_status_check
                                 CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
    -- The staff user who receives delivery status for the customer's messages; NULL: unassigned.
    assigned_user_id uuid        CONSTRAINT conversations_assigned_user_id_fkey
                                 REFERENCES public.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_customer_id_idx ON public.conversations (customer_id);
CREATE INDEX conversations_assigned_user_id_idx ON public.conversations (assigned_user_id)
    WHERE assigned_user_id IS NOT NULL;

CREATE TABLE public.customer_messages (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id   uuid        NOT NULL
                                  CONSTRAINT customer_messages_conversation_id_fkey
                                  REFERENCES public.conversations (id) ON DELETE CASCADE,
    sender_type       text        NOT NULL
                                  CONSTRAINT customer_messages_sender_type_check
                                  CHECK (sender_type IN ('customer', 'staff')),
    -- A customers.id or a users.id depending on sender_type, so no foreign key can say it; the
    -- trigger rule customer_messages_sender_is_participant checks it on insert.
    sender_id         uuid        NOT NULL,
    content           text        NOT NULL,
    attachments       jsonb       NOT NULL DEFAULT '[]'
                                  CONSTRAINT customer_messages_attachments_check
                                  CHECK (jsonb_typeof(attachments) = 'array'),
    -- Chosen by the sending client so that a retried send is recognised (idempotent sends).
    client_message_id text        CONSTRAINT customer_messages_client_message_id_check
                                  CHECK (length(client_message_id) BETWEEN 1 AND 255),
    -- clock_timestamp(), not now(): messages written in one transaction keep their order.
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- History of a conversation by cursor: WHERE conversation_id = $1 AND (created_at, id) < ($2, $3)
-- ORDER BY created_at DESC, id DESC. Also serves the cascade from a deleted conversation.
CREATE INDEX customer_messages_history_idx
    ON public.customer_messages (conversation_id, created_at, id);
-- Idempotent sends: one message per client id per sender. Partial, because most rows have none.
CREATE UNIQUE INDEX customer_messages_client_message_id_key
    ON public.customer_messages (sender_type, sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;

-- Read receipts ----------------------------------------------------------------------------------

CREATE TABLE public.message_read_receipts (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid        NOT NULL
                                    CONSTRAINT message_read_receipts_message_id_fkey
                                    REFERENCES public.customer_messages (id) ON DELETE CASCADE,
    read_by_user_id     uuid        CONSTRAINT message_read_receipts_read_by_user_id_fkey
                                    REFERENCES public.users (id) ON DELETE CASCADE,
    read_by_customer_id uuid        CONSTRAINT message_read_receipts_read_by_customer_id_fkey
                                    REFERENCES public.customers (id) ON DELETE CASCADE,
    read_at             timestamptz NOT NULL DEFAULT now(),
    -- Both copied from the message by a trigger (whatever the writer supplies is overwritten):
    -- the change feed can route a receipt to its conversation without a lookup, and the unread
    -- counters can be decremented when the receipt is deleted together with its message.
    conversation_id     uuid        NOT NULL,
    message_sender_type text        NOT NULL
                                    CONSTRAINT message_read_receipts_message_sender_type_check
                                    CHECK (message_sender_type IN ('customer', 'staff')),
    CONSTRAINT message_read_receipts_one_reader
        CHECK (num_nonnulls(read_by_user_id, read_by_customer_id) = 1),
    -- Receipts record that the other side read a message: staff read customer messages,
    -- customers read staff messages.
    CONSTRAINT message_read_receipts_reader_is_recipient
        CHECK ((read_by_user_id IS NOT NULL) = (message_sender_type = 'customer')),
    -- The documented constraint, made to work: with plain UNIQUE, (m, u, NULL) twice would be
    -- two distinct rows because NULLs are distinct. NULLS NOT DISTINCT (PostgreSQL 15+) makes
    -- the NULL side compare equal; together with message_read_receipts_one_reader that is exactly
    -- "one receipt per (message, reader)". One index leading with message_id also serves the
    -- anti-join "has this reader read m" and the cascade from a deleted message, which two
    -- partial unique indexes could not.
    CONSTRAINT unique_message_reader
        UNIQUE NULLS NOT DISTINCT (message_id, read_by_user_id, read_by_customer_id)
);
-- The cascades from a deleted user or customer.
CREATE INDEX message_read_receipts_read_by_user_id_idx
    ON public.message_read_receipts (read_by_user_id) WHERE read_by_user_id IS NOT NULL;
CREATE INDEX message_read_receipts_read_by_customer_id_idx
    ON public.message_read_receipts (read_by_customer_id) WHERE read_by_customer_id IS NOT NULL;
-- A customer's view of receipts is by conversation (row-level security).
CREATE INDEX message_read_receipts_conversation_id_idx
    ON public.message_read_receipts (conversation_id);

-- Typing indicators ------------------------------------------------------------------------------

CREATE TABLE public.message_typing_indicators (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL
                                CONSTRAINT message_typing_indicators_conversation_id_fkey
                                REFERENCES public.conversations (id) ON DELETE CASCADE,
    customer_id     uuid        CONSTRAINT message_typing_indicators_customer_id_fkey
                                REFERENCES public.customers (id) ON DELETE CASCADE,
    user_id         uuid        CONSTRAINT message_typing_indicators_user_id_fkey
                                REFERENCES public.users (id) ON DELETE CASCADE,
    is_typing       boolean     NOT NULL DEFAULT true,
    started_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '5 seconds',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT message_typing_indicators_one_participant
        CHECK (num_nonnulls(customer_id, user_id) = 1),
    -- One row per (conversation, participant); see unique_message_reader for why NULLS NOT
    -- DISTINCT. A single arbiter also lets one upsert serve staff and customers alike.
    CONSTRAINT message_typing_indicators_one_per_participant
        UNIQUE NULLS NOT DISTINCT (conversation_id, user_id, customer_id)
);
-- cleanup_expired_typing_indicators(): DELETE ... WHERE expires_at <= now().
CREATE INDEX message_typing_indicators_expires_at_idx
    ON public.message_typing_indicators (expires_at);

-- Presence ---------------------------------------------------------------------------------------

CREATE TABLE public.user_presence (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Plain UNIQUE is right here: each column is unique on its own, and the many NULLs of the
    -- other kind of row must not collide.
    user_id      uuid        CONSTRAINT user_presence_user_id_key UNIQUE
                             CONSTRAINT user_presence_user_id_fkey
                             REFERENCES public.users (id) ON DELETE CASCADE,
    customer_id  uuid        CONSTRAINT user_presence_customer_id_key UNIQUE
                             CONSTRAINT user_presence_customer_id_fkey
                             REFERENCES public.customers (id) ON DELETE CASCADE,
    status       text        NOT NULL DEFAULT 'offline'
                             CONSTRAINT user_presence_status_check
                             CHECK (status IN ('online', 'away', 'offline')),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    metadata     jsonb       NOT NULL DEFAULT '{}'
                             CONSTRAINT user_presence_metadata_check
                             CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT user_presence_one_subject CHECK (num_nonnulls(user_id, customer_id) = 1)
);

-- Delivery status --------------------------------------------------------------------------------

CREATE TABLE public.message_delivery_status (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id      uuid        NOT NULL
                                CONSTRAINT message_delivery_status_message_id_fkey
                                REFERENCES public.customer_messages (id) ON DELETE CASCADE,
    status          text        NOT NULL DEFAULT 'sent'
                                CONSTRAINT message_delivery_status_status_check
                                CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    recipient_type  text        NOT NULL
                                CONSTRAINT message_delivery_status_recipient_type_check
                                CHECK (recipient_type IN ('customer', 'staff')),
    -- A customers.id or a users.id; checked on insert by message_delivery_status_recipient.
    recipient_id    uuid        NOT NULL,
    delivered_at    timestamptz,
    read_at         timestamptz,
    failed_reason   text,
    -- Copied from the message by a trigger, as on receipts.
    conversation_id uuid        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT message_delivery_status_recipient_key
        UNIQUE (message_id, recipient_type, recipient_id),
    -- The timestamps say how far the message got: read implies delivered. The trigger fills
    -- them in on each transition; this keeps hand-written rows honest too.
    CONSTRAINT message_delivery_status_timestamps CHECK (
        (status IN ('delivered', 'read')) = (delivered_at IS NOT NULL)
        AND (status = 'read') = (read_at IS NOT NULL)
    )
);
CREATE INDEX message_delivery_status_conversation_id_idx
    ON public.message_delivery_status (conversation_id);
-- "What has not reached me yet": a recipient's rows.
CREATE INDEX message_delivery_status_recipient_idx
    ON public.message_delivery_status (recipient_type, recipient_id, status);

-- Portal tokens ----------------------------------------------------------------------------------

-- Opaque bearer tokens of customers; only a hash is stored (hashing happens in Python).
CREATE TABLE public.portal_tokens (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash   text        NOT NULL CONSTRAINT portal_tokens_token_hash_key UNIQUE,
    customer_id  uuid        NOT NULL
                             CONSTRAINT portal_tokens_customer_id_fkey
                             REFERENCES public.customers (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX portal_tokens_customer_id_idx ON public.portal_tokens (customer_id);

-- Unread counters (internal) ---------------------------------------------------------------------
--
-- get_unread_message_count() answers from these instead of anti-joining every message against
-- the receipts. Triggers keep them exact in the writing transaction:
--   unread(staff user u) = sum(customer_messages) over all conversations - receipts of u
--   unread(customer c)   = sum(staff_messages) over c's conversations  - receipts of c
-- which equals the naive count because every receipt is on an existing message of the other
-- side (foreign key + message_read_receipts_reader_is_recipient), is unique per reader
-- (unique_message_reader), and a customer's receipts are all in their own conversations
-- (message_read_receipts_reader_is_participant).

-- One row per conversation that has had a message (created by the first one).
CREATE TABLE rtm.conversation_counters (
    conversation_id   uuid    PRIMARY KEY
                              REFERENCES public.conversations (id) ON DELETE CASCADE,
    -- The conversation's customer, which never changes: a customer's sum is an index range here.
    customer_id       uuid    NOT NULL,
    customer_messages integer NOT NULL DEFAULT 0 CHECK (customer_messages >= 0),
    staff_messages    integer NOT NULL DEFAULT 0 CHECK (staff_messages >= 0)
);
CREATE INDEX conversation_counters_customer_id_idx ON rtm.conversation_counters (customer_id);

-- One row per reader who has ever read a message: how many receipts they hold.
CREATE TABLE rtm.reader_counters (
    user_id     uuid   CONSTRAINT reader_counters_user_id_key UNIQUE
                       REFERENCES public.users (id) ON DELETE CASCADE,
    customer_id uuid   CONSTRAINT reader_counters_customer_id_key UNIQUE
                       REFERENCES public.customers (id) ON DELETE CASCADE,
    receipts    bigint NOT NULL DEFAULT 0 CHECK (receipts >= 0),
    CONSTRAINT reader_counters_one_reader CHECK (num_nonnulls(user_id, customer_id) = 1)
);
