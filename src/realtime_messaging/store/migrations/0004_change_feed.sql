-- The change feed (store/changefeed.py explains the reading side).
--
-- Every committed insert, update or delete on the messaging tables, whoever writes it (the API,
-- the SQL functions, or psql), is queued by the trigger below. A single stamper moves committed
-- queue rows into the log with consecutive positions; clients resume from a position.

CREATE TABLE rtm.change_queue (
    id              bigserial   PRIMARY KEY,
    table_name      text        NOT NULL,
    op              text        NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    record          jsonb,
    old_record      jsonb,
    conversation_id uuid,
    -- The customer allowed to see the change besides staff (NULL: staff only), decided from the
    -- row when it is written, so that nothing is looked up per subscriber when it is delivered.
    customer_id     uuid,
    changed_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE rtm.change_log (
    pos             bigint      PRIMARY KEY,
    table_name      text        NOT NULL,
    op              text        NOT NULL,
    record          jsonb,
    old_record      jsonb,
    conversation_id uuid,
    customer_id     uuid,
    changed_at      timestamptz NOT NULL
);

-- Retention pruning and a customer's catch-up read.
CREATE INDEX change_log_changed_at_idx ON rtm.change_log (changed_at);
CREATE INDEX change_log_customer_idx ON rtm.change_log (customer_id, pos);

-- The last position handed out. Kept apart from the log so that positions never restart when
-- retention empties the log; its row lock also serialises stampers.
CREATE TABLE rtm.change_feed_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_pos  bigint  NOT NULL DEFAULT 0
);
INSERT INTO rtm.change_feed_state DEFAULT VALUES;

-- Changes of one conversation must be queued in commit order, so every writer takes the
-- conversation's row lock, until commit, before anything else it does to that conversation.
-- A BEFORE trigger runs ahead of every AFTER trigger (counters, cascades, capture), so all
-- writers take their locks in the same order and do not deadlock on them. (NO KEY UPDATE does
-- not block the KEY SHARE locks of foreign-key checks.) Named zz_ so that it runs after the
-- BEFORE triggers that fill in conversation_id.
CREATE FUNCTION rtm.lock_conversation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    conv uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN
        conv := OLD.conversation_id;
    ELSE
        conv := NEW.conversation_id;
    END IF;
    PERFORM 1 FROM public.conversations AS c WHERE c.id = conv FOR NO KEY UPDATE;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION rtm.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    conv     uuid;
    owner    uuid;
    rec      jsonb;
    old_rec  jsonb;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        rec := to_jsonb(NEW);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_rec := to_jsonb(OLD);
    END IF;

    IF TG_TABLE_NAME = 'user_presence' THEN
        -- A customer's presence row is theirs and staff's. A staff row goes to staff only: which
        -- customers may see it depends on who took part in their conversations, which one row
        -- cannot carry; customers follow staff through the presence:<conversation> channels.
        owner := coalesce(rec ->> 'customer_id', old_rec ->> 'customer_id')::uuid;
    ELSE
        IF TG_TABLE_NAME = 'conversations' THEN
            conv := coalesce(rec ->> 'id', old_rec ->> 'id')::uuid;
        ELSE
            conv := coalesce(rec ->> 'conversation_id', old_rec ->> 'conversation_id')::uuid;
        END IF;
        -- Already locked by rtm.lock_conversation (or by this very write to conversations).
        SELECT c.customer_id INTO owner FROM public.conversations AS c WHERE c.id = conv;
        IF owner IS NULL AND TG_TABLE_NAME = 'conversations' THEN
            owner := coalesce(rec ->> 'customer_id', old_rec ->> 'customer_id')::uuid;
        END IF;
        -- Still NULL: deleted together with its conversation, so only staff can be told.
    END IF;

    INSERT INTO rtm.change_queue (table_name, op, record, old_record, conversation_id, customer_id)
    VALUES (TG_TABLE_NAME, TG_OP, rec, old_rec, conv, owner);
    PERFORM pg_notify('rtm_change', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER zz_lock_conversation BEFORE INSERT OR UPDATE OR DELETE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.lock_conversation();
CREATE TRIGGER zz_lock_conversation BEFORE INSERT OR UPDATE OR DELETE ON public.message_read_receipts
    FOR EACH ROW EXECUTE FUNCTION rtm.lock_conversation();
CREATE TRIGGER zz_lock_conversation BEFORE INSERT OR UPDATE OR DELETE ON public.message_typing_indicators
    FOR EACH ROW EXECUTE FUNCTION rtm.lock_conversation();
CREATE TRIGGER zz_lock_conversation BEFORE INSERT OR UPDATE OR DELETE ON public.message_delivery_status
    FOR EACH ROW EXECUTE FUNCTION rtm.lock_conversation();

CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.conversations
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();
CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();
CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.message_read_receipts
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();
CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.message_typing_indicators
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();
CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.user_presence
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();
CREATE TRIGGER zz_capture_change AFTER INSERT OR UPDATE OR DELETE ON public.message_delivery_status
    FOR EACH ROW EXECUTE FUNCTION rtm.capture_change();

-- Only the triggers (as definer) and the server's own connection touch the feed tables.
REVOKE ALL ON rtm.change_queue, rtm.change_log, rtm.change_feed_state FROM PUBLIC;
REVOKE ALL ON SEQUENCE rtm.change_queue_id_seq FROM PUBLIC;
