-- The change feed's capture trigger: the one current definition of rtm.capture_change
-- (docs/changes.md). It replaces the definitions of 0004_change_feed and 0007_quiet_writers,
-- which stay as they were applied; what they say about the queue, the conversation lock and
-- the stamper still holds.
--
-- The same rows reach the queue as before, for less work per row (benchmarks/changefeed/
-- capture.py measures it against the same insert without capture):
--
-- * the row is turned into JSON once and only the row that exists (NEW for an insert, OLD for
--   a delete, both for an update); the conversation and owner are read from the row's own
--   fields instead of being parsed back out of that JSON;
-- * the owner is looked up in conversations only where the row cannot say it: a conversation
--   carries its own customer, and a customer's new message is checked, at the end of the same
--   statement, to come from the conversation's customer (customer_messages_after_insert), so a
--   message whose sender is not the owner never commits;
-- * nothing else changes: the conversation lock taken before (rtm.lock_conversation), the
--   stamper's wake-up at commit (rtm.wake_stamper), the columns and what they hold.

CREATE OR REPLACE FUNCTION rtm.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    conv     uuid;
    owner    uuid;
    rec      jsonb;
    old_rec  jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        rec := to_jsonb(NEW);
    ELSIF TG_OP = 'DELETE' THEN
        old_rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
        old_rec := to_jsonb(OLD);
    END IF;

    IF TG_TABLE_NAME = 'user_presence' THEN
        -- A customer's presence row is theirs and staff's. A staff row goes to staff only: which
        -- customers may see it depends on who took part in their conversations, which one row
        -- cannot carry; customers follow staff through the presence:<conversation> channels.
        IF TG_OP = 'DELETE' THEN
            owner := OLD.customer_id;
        ELSE
            owner := NEW.customer_id;
        END IF;
    ELSIF TG_TABLE_NAME = 'conversations' THEN
        IF TG_OP = 'DELETE' THEN
            conv := OLD.id;
            owner := OLD.customer_id;
        ELSE
            conv := NEW.id;
            owner := NEW.customer_id;
        END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN
            conv := OLD.conversation_id;
        ELSE
            conv := NEW.conversation_id;
        END IF;
        -- (Nested: an expression naming NEW.sender_type fails on the other tables.)
        IF TG_OP = 'INSERT' AND TG_TABLE_NAME = 'customer_messages' THEN
            IF NEW.sender_type = 'customer' THEN
                owner := NEW.sender_id;
            END IF;
        END IF;
        IF owner IS NULL THEN
            -- Already locked by rtm.lock_conversation. Not found: deleted together with its
            -- conversation, so only staff can be told.
            SELECT c.customer_id INTO owner FROM public.conversations AS c WHERE c.id = conv;
        END IF;
    END IF;

    INSERT INTO rtm.change_queue (table_name, op, record, old_record, conversation_id, customer_id)
    VALUES (TG_TABLE_NAME, TG_OP, rec, old_rec, conv, owner);
    RETURN NULL;
END;
$$;
