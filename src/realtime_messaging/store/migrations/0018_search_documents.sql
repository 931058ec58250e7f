-- 0018_search_documents: search's words in a table of their own, ordered by time (docs/api.md,
-- "Search and queues"; benchmarks/README.md, "Search and queues").
--
-- 0015 indexed the expression to_tsvector(content): the index finds a word's messages, but it
-- cannot order them, and ranking needs each candidate's words, which only the content holds. A
-- word in tens of thousands of messages therefore cost a read of every match's row (to find the
-- newest) and a second parse of each candidate: 120 ms for a word in 4 % of a million messages.
--
-- Here each live message's words are stored once, parsed at insert (the parse the expression
-- index also did), in rtm.message_search keyed by (created_at, id): the key's index is a walk
-- from the newest message back, and the stored vector is checked and ranked without parsing. The
-- planner now has two ways to the newest matches and statistics to choose between them (ANALYZE
-- keeps the most common words of a tsvector column, which it cannot for an expression): the text
-- index for a word in few messages, the walk back in time, stopping at the candidates' count,
-- for a word in many. The words stay out of customer_messages, so no captured change, /rest/v1
-- row or postgres_changes payload carries them.
--
-- Tombstones (deleted_at set) have no row here; an edit replaces the row's words.

CREATE TABLE rtm.message_search (
    created_at      timestamptz NOT NULL,
    id              uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    document        tsvector    NOT NULL,
    CONSTRAINT message_search_pkey PRIMARY KEY (created_at, id)
);
COMMENT ON TABLE rtm.message_search IS
    'The words of each live message (to_tsvector(''simple'', content)), kept by triggers on '
    'customer_messages; read only by rtm.search_messages.';

-- Written by triggers running as their owner; no end-user role reads it (search_messages does,
-- as its owner, and returns only ids).
REVOKE ALL ON rtm.message_search FROM PUBLIC;

-- Fills the table from customer_messages: the migration's backfill, and a repair after data was
-- loaded with triggers off (session_replication_role = replica, as bulk loads and the search
-- benchmark do). Returns the number of messages indexed.
CREATE FUNCTION rtm.rebuild_message_search() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE public.customer_messages IN SHARE ROW EXCLUSIVE MODE;
    TRUNCATE rtm.message_search;
    INSERT INTO rtm.message_search (created_at, id, conversation_id, document)
    SELECT m.created_at, m.id, m.conversation_id, to_tsvector('simple'::regconfig, m.content)
    FROM public.customer_messages AS m
    WHERE m.deleted_at IS NULL
    ORDER BY m.created_at, m.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    ANALYZE rtm.message_search;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION rtm.rebuild_message_search() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rtm.rebuild_message_search() TO service_role;

SELECT rtm.rebuild_message_search();
CREATE INDEX message_search_document_idx ON rtm.message_search USING gin (document);
DROP INDEX public.customer_messages_search_idx;

-- Kept by statement triggers where a statement may hold many messages (one trigger call for a
-- batch insert), by a row trigger for edits and deletes (one message at a time).
CREATE FUNCTION rtm.message_search_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO rtm.message_search (created_at, id, conversation_id, document)
    SELECT n.created_at, n.id, n.conversation_id, to_tsvector('simple'::regconfig, n.content)
    FROM inserted_messages AS n
    WHERE n.deleted_at IS NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_search_insert
    AFTER INSERT ON public.customer_messages
    REFERENCING NEW TABLE AS inserted_messages
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_search_insert();

-- An edit changes the words, a delete (a tombstone) takes them away. A message's time and
-- conversation never change (0002's update rules), so its key here stays the same.
CREATE FUNCTION rtm.message_search_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL THEN
        DELETE FROM rtm.message_search AS s
        WHERE s.created_at = OLD.created_at AND s.id = OLD.id;
    ELSE
        INSERT INTO rtm.message_search AS s (created_at, id, conversation_id, document)
        VALUES (NEW.created_at, NEW.id, NEW.conversation_id,
                to_tsvector('simple'::regconfig, NEW.content))
        ON CONFLICT ON CONSTRAINT message_search_pkey
            DO UPDATE SET document = excluded.document;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_search_update
    AFTER UPDATE OF content, deleted_at ON public.customer_messages
    FOR EACH ROW
    WHEN (OLD.content IS DISTINCT FROM NEW.content
          OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION rtm.message_search_update();

CREATE FUNCTION rtm.message_search_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    DELETE FROM rtm.message_search AS s
    USING deleted_messages AS d
    WHERE s.created_at = d.created_at AND s.id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_search_delete
    AFTER DELETE ON public.customer_messages
    REFERENCING OLD TABLE AS deleted_messages
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_search_delete();

CREATE FUNCTION rtm.message_search_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    TRUNCATE rtm.message_search;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_search_truncate
    AFTER TRUNCATE ON public.customer_messages
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_search_truncate();

-- 0015's function, reading the stored words. Above the threshold (every message, or many
-- conversations' worth) the candidates come from rtm.message_search alone, and the planner
-- picks the text index or the walk back in time by how common the words are. For a few
-- conversations (a customer's, the one asked for) their messages are read through the history
-- index and each one's words looked up by key: no parse, and no text index entries of a
-- frequent word. The interface, the row rules' part and the page cut are 0015's.
CREATE OR REPLACE FUNCTION rtm.search_messages(
    query tsquery,
    conversation_ids uuid[],
    after_rank real,
    after_created_at timestamptz,
    after_id uuid,
    max_rows integer,
    candidates integer
) RETURNS TABLE (id uuid, rank real, created_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    few boolean := false;
BEGIN
    IF NOT (rtm.is_staff() OR rtm.is_service()) THEN
        conversation_ids := ARRAY(
            SELECT c.id FROM public.conversations AS c
            WHERE c.customer_id = rtm.current_customer_id()
              AND (conversation_ids IS NULL OR c.id = ANY (conversation_ids)));
    END IF;
    IF conversation_ids IS NOT NULL THEN
        few := (SELECT coalesce(sum(cc.customer_messages + cc.staff_messages), 0)
                FROM rtm.conversation_counters AS cc
                WHERE cc.conversation_id = ANY (conversation_ids)) <= 5000;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT h.id, h.rank, h.created_at FROM ('
        '    SELECT w.id, ts_rank(w.document, $1) AS rank, w.created_at FROM ('
        || CASE WHEN few THEN
               '    SELECT s.id, s.created_at, s.document'
               '    FROM public.customer_messages AS m'
               '    JOIN rtm.message_search AS s ON s.created_at = m.created_at AND s.id = m.id'
               '    WHERE m.conversation_id = ANY ($2) AND m.deleted_at IS NULL'
               -- (An expression the text index does not cover: the planner cannot pick it.)
               '      AND (s.document @@ $1) IS TRUE'
           ELSE
               '    SELECT s.id, s.created_at, s.document FROM rtm.message_search AS s'
               '    WHERE s.document @@ $1'
               || CASE WHEN conversation_ids IS NULL THEN ''
                       ELSE ' AND s.conversation_id = ANY ($2)' END
           END
        || '    ORDER BY s.created_at DESC, s.id DESC LIMIT $7) AS w'
        || ') AS h'
        || CASE WHEN after_id IS NULL THEN ''
                ELSE ' WHERE (h.rank, h.created_at, h.id) < ($3, $4, $5)' END
        || ' ORDER BY h.rank DESC, h.created_at DESC, h.id DESC LIMIT $6'
    USING query, conversation_ids, after_rank, after_created_at, after_id, max_rows, candidates;
END
$$;
