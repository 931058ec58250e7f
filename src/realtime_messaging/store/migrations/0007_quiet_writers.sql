-- Writers NOTIFY only while the stamper sleeps (store/changefeed.py, FAST_POLL and LINGER).
--
-- A transaction that has sent NOTIFY takes a cluster-wide lock at commit and keeps it until
-- its commit record is flushed, so under load every writer would wait for every other writer's
-- WAL flush (measured: the change-feed benchmark's p99 at 1,000 messages per second). While the
-- stamper is awake it polls the queue every few milliseconds and writers stay silent; when it
-- has had nothing to do for a moment it says so here, and the next writer wakes it.
--
-- The flag is read at commit (a deferred trigger), not when the row is written: a writer that
-- saw the stamper awake early in a long transaction would otherwise commit after it fell
-- asleep and wait for the poll. The stamper takes one more look a few milliseconds after it
-- says it sleeps, which covers the instant between a writer's check and its commit.

ALTER TABLE rtm.change_feed_state ADD COLUMN stamper_awake boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION rtm.capture_change() RETURNS trigger
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
    RETURN NULL;
END;
$$;

CREATE FUNCTION rtm.wake_stamper() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT coalesce((SELECT s.stamper_awake FROM rtm.change_feed_state AS s), false) THEN
        PERFORM pg_notify('rtm_change', '');  -- sent once per transaction, however many rows
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER wake_stamper AFTER INSERT ON rtm.change_queue
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rtm.wake_stamper();
