-- 0015_search: full-text search over messages, and the conversation list's "last activity"
-- (docs/api.md, "Search and queues").
--
-- Search is an expression GIN index, not a stored tsvector column: a generated column would be
-- part of every row the change feed captures (rtm.capture_change turns the whole row into
-- JSON), so every postgres_changes payload and every change log row would carry the vector too.
-- The index computes the same vector once per insert; GIN's pending list (fastupdate, on by
-- default) batches its entries, so an insert pays the parse and an append, not a tree walk per
-- word. The 'simple' configuration lowercases words and neither stems nor drops stop words: a
-- support desk writes in many languages, and an exact word (an order number, a product name)
-- must be found as typed. Queries must spell the same expression to use the index
-- (server/api/search.py). Tombstones (deleted_at set, content emptied) are left out.
CREATE INDEX customer_messages_search_idx ON public.customer_messages
    USING gin (to_tsvector('simple'::regconfig, content))
    WHERE deleted_at IS NULL;

-- The search itself, as its owner. Under row-level security PostgreSQL may use an index only
-- for leakproof operators (so that a row the caller may not see cannot leak through an error or
-- timing), and the text search match operator is not one: run as the caller, every search read
-- every message. This function finds and ranks the matches without row rules, and returns only
-- ids, ranks and times: the API joins them back to customer_messages as the caller, so row-level
-- security still decides what is shown. conversation_ids narrows the search (the one asked
-- for); NULL searches every message the caller may see (for a customer: their conversations).
--
-- Ranking needs each candidate's words again (the index holds no positions to rank by), about
-- 25 us a message, so a word in a hundred thousand messages would take seconds. The ranked
-- candidates are therefore the newest `candidates` matches (the index finds all matches, their
-- times order them, without parsing any); within them, best first, keyset-paged by
-- (rank, time, id) so that only max_rows rows leave the function. The dynamic statement is
-- planned with the values it gets: a customer's few conversations are read through their
-- history index, a staff search through the text index.
CREATE FUNCTION rtm.search_messages(
    query tsquery,
    conversation_ids uuid[],
    after_rank real,
    after_created_at timestamptz,
    after_id uuid,
    max_rows integer,
    candidates integer
) RETURNS TABLE (id uuid, rank real, created_at timestamptz)
-- ROWS: at most a page (max_rows), so that the join back reads by primary key.
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    few boolean := false;
BEGIN
    -- The same rule as customer_messages_select, so that the function alone returns nothing
    -- a customer may not see: their own conversations only (a customer's row rules would drop
    -- the others anyway, after ranking them for nothing).
    IF NOT (rtm.is_staff() OR rtm.is_service()) THEN
        conversation_ids := ARRAY(
            SELECT c.id FROM public.conversations AS c
            WHERE c.customer_id = rtm.current_customer_id()
              AND (conversation_ids IS NULL OR c.id = ANY (conversation_ids)));
    END IF;
    -- A few conversations (a customer's, or the one asked for) hold few messages: reading them
    -- by their history index and matching each costs less than the text index's entries of a
    -- frequent word, which the planner would otherwise combine with it. Above the threshold,
    -- the text index.
    IF conversation_ids IS NOT NULL THEN
        few := (SELECT coalesce(sum(cc.customer_messages + cc.staff_messages), 0)
                FROM rtm.conversation_counters AS cc
                WHERE cc.conversation_id = ANY (conversation_ids)) <= 5000;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT h.id, h.rank, h.created_at FROM ('
        '    SELECT w.id, ts_rank(to_tsvector(''simple''::regconfig, w.content), $1) AS rank,'
        '           w.created_at'
        '    FROM (SELECT m.id, m.created_at, m.content FROM public.customer_messages AS m'
        '          WHERE m.deleted_at IS NULL AND '
        || CASE WHEN few
                -- (An expression the index does not cover: the planner cannot pick it.)
                THEN '(to_tsvector(''simple''::regconfig, m.content) @@ $1) IS TRUE'
                ELSE 'to_tsvector(''simple''::regconfig, m.content) @@ $1' END
        || CASE WHEN conversation_ids IS NULL THEN ''
                ELSE ' AND m.conversation_id = ANY ($2)' END
        || '      ORDER BY m.created_at DESC LIMIT $7) AS w'
        || ') AS h'
        || CASE WHEN after_id IS NULL THEN ''
                ELSE ' WHERE (h.rank, h.created_at, h.id) < ($3, $4, $5)' END
        || ' ORDER BY h.rank DESC, h.created_at DESC, h.id DESC LIMIT $6'
    USING query, conversation_ids, after_rank, after_created_at, after_id, max_rows, candidates;
END
$$;

REVOKE ALL ON FUNCTION
    rtm.search_messages(tsquery, uuid[], real, timestamptz, uuid, integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    rtm.search_messages(tsquery, uuid[], real, timestamptz, uuid, integer, integer)
    TO authenticated, service_role;

-- Last activity of a conversation: the later of its latest message's time and its updated_at.
-- The latest message's time is kept beside the unread counters, which every message insert
-- already upserts (one row per conversation), so it costs no extra row write; a column on
-- conversations itself would turn every message into a conversation UPDATE and a second change
-- in the feed.
LOCK TABLE public.customer_messages IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE rtm.conversation_counters ADD COLUMN last_message_at timestamptz;

UPDATE rtm.conversation_counters AS cc
SET last_message_at = (SELECT max(m.created_at) FROM public.customer_messages AS m
                       WHERE m.conversation_id = cc.conversation_id);

-- 0002's function with last_message_at in step 2's upsert; the rest is unchanged.
CREATE OR REPLACE FUNCTION rtm.customer_messages_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    -- 1. A customer writes only in their own conversation; staff are users.
    SELECT n.id, n.sender_type, n.sender_id, n.conversation_id INTO bad
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    WHERE CASE n.sender_type
              WHEN 'customer' THEN n.sender_id <> c.customer_id
              ELSE NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = n.sender_id)
          END
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% % is not a participant of conversation %',
                bad.sender_type, bad.sender_id, bad.conversation_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'customer_messages_sender_is_participant',
                  SCHEMA = 'public', TABLE = 'customer_messages';
    END IF;

    -- 2. Counters and last message time, in conversation order (concurrent writers queue).
    INSERT INTO rtm.conversation_counters AS cc
        (conversation_id, customer_id, customer_messages, staff_messages, last_message_at)
    SELECT n.conversation_id, c.customer_id,
           count(*) FILTER (WHERE n.sender_type = 'customer'),
           count(*) FILTER (WHERE n.sender_type = 'staff'),
           max(n.created_at)
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    GROUP BY n.conversation_id, c.customer_id
    ORDER BY n.conversation_id
    ON CONFLICT (conversation_id) DO UPDATE
        SET customer_messages = cc.customer_messages + excluded.customer_messages,
            staff_messages = cc.staff_messages + excluded.staff_messages,
            last_message_at = greatest(cc.last_message_at, excluded.last_message_at);

    -- 3. Delivery status 'sent' for the recipient.
    INSERT INTO public.message_delivery_status (message_id, recipient_type, recipient_id, status)
    SELECT n.id,
           CASE n.sender_type WHEN 'staff' THEN 'customer' ELSE 'staff' END,
           CASE n.sender_type WHEN 'staff' THEN c.customer_id ELSE c.assigned_user_id END,
           'sent'
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    WHERE n.sender_type = 'staff' OR c.assigned_user_id IS NOT NULL
    ORDER BY n.id;

    -- 4. Typing stops when the typist sends.
    UPDATE public.message_typing_indicators AS t
    SET is_typing = false, expires_at = now(), updated_at = now()
    FROM inserted_messages AS n
    WHERE t.is_typing
      AND t.conversation_id = n.conversation_id
      AND CASE n.sender_type
              WHEN 'staff' THEN t.user_id = n.sender_id
              ELSE t.customer_id = n.sender_id
          END;

    RETURN NULL;
END
$$;

-- The list's order (server/api/queues.py): its page is cut from a walk of each of the two
-- times of last activity, newest first. The counters' index is the one cost a message insert
-- pays here: the counter row's update now changes an indexed column.
CREATE INDEX conversation_counters_last_message_at_idx
    ON rtm.conversation_counters (last_message_at, conversation_id);
CREATE INDEX conversations_updated_at_idx ON public.conversations (updated_at, id);
