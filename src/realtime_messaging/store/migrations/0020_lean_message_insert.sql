-- 0020_lean_message_insert: what a message insert runs, in two trigger functions instead of
-- six (issue 16, "change feed, steady state"; benchmarks/README.md, "Change feed" → "Insert
-- path").
--
-- A message insert used to fire, besides the change feed's capture: a BEFORE trigger locking
-- its conversation (0004) and one ordering its time (0008); after it, a statement trigger with a
-- transition table for the participant rule, the counters, the delivery row and the end of
-- typing (0002, last defined in 0015), a statement trigger for search's words (0018) and a row
-- trigger for the webhook event (0016). Measured per insert (benchmarks/changefeed/insert_cost.py
-- and capture.py), the statement trigger alone was about a third of PostgreSQL's CPU: its four
-- queries over the transition table cost far more for the one row an API send inserts than the
-- same work done with NEW. The rules are unchanged; only where they run:
--
-- * BEFORE INSERT, zz_lock_and_order: the conversation's lock, then the time after the lock
--   (0008's reasoning), in one call. zz_lock_conversation still guards updates and deletes.
-- * AFTER INSERT, zzz_message_inserted, per row: the participant rule, counters and last message
--   time, the delivery row, the end of the sender's typing, search's words, the webhook event.
--   Its name sorts it after zz_capture_change (AFTER triggers of a table fire in name order),
--   so that the message's change is in the feed before its delivery row's and the typing
--   indicator's, as with the statement trigger that ran after every row trigger. A multi-row
--   insert locks its conversations row by row in the BEFORE trigger already, so doing the
--   counters row by row adds no deadlock the batch did not have.

-- The message part of a webhook event, shared by the insert trigger and webhook_message_event.
CREATE FUNCTION rtm.webhook_message_data(m public.customer_messages) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT jsonb_build_object(
        'id', m.id,
        'conversationId', m.conversation_id,
        'senderType', m.sender_type,
        'senderId', m.sender_id,
        'content', m.content,
        'attachments', m.attachments,
        'clientMessageId', m.client_message_id,
        'createdAt', m.created_at,
        'editedAt', m.edited_at,
        'deletedAt', m.deleted_at)
$$;
REVOKE ALL ON FUNCTION rtm.webhook_message_data(public.customer_messages) FROM PUBLIC;

-- 0019's function, its data from the shared builder; it now fires for updates only.
CREATE OR REPLACE FUNCTION rtm.webhook_message_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    event text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        event := 'message.created';
    ELSIF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        event := 'message.deleted';
    ELSIF NEW.deleted_at IS NULL THEN
        event := 'message.updated';
    ELSE
        RETURN NULL;  -- a change to a tombstone: nothing a receiver needs
    END IF;
    IF EXISTS (SELECT 1 FROM rtm.webhooks AS w WHERE event = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue(event, NEW.conversation_id, rtm.webhook_message_data(NEW));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION rtm.message_lock_and_order() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM 1 FROM public.conversations AS c WHERE c.id = NEW.conversation_id
        FOR NO KEY UPDATE;
    NEW.created_at := greatest(
        clock_timestamp(),
        (SELECT m.created_at + interval '1 microsecond'
         FROM public.customer_messages AS m
         WHERE m.conversation_id = NEW.conversation_id
         ORDER BY m.created_at DESC
         LIMIT 1));
    RETURN NEW;
END;
$$;

CREATE FUNCTION rtm.message_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    conv record;
    outsider boolean;
BEGIN
    -- (Locked by zz_lock_and_order; the foreign key's check has run: it exists.)
    SELECT c.customer_id, c.assigned_user_id INTO conv
    FROM public.conversations AS c WHERE c.id = NEW.conversation_id;

    -- 1. A customer writes only in their own conversation; staff are users.
    IF NEW.sender_type = 'customer' THEN
        outsider := NEW.sender_id IS DISTINCT FROM conv.customer_id;
    ELSE
        outsider := NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = NEW.sender_id);
    END IF;
    IF outsider THEN
        RAISE EXCEPTION '% % is not a participant of conversation %',
                NEW.sender_type, NEW.sender_id, NEW.conversation_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'customer_messages_sender_is_participant',
                  SCHEMA = 'public', TABLE = 'customer_messages';
    END IF;

    -- 2. Counters and last message time.
    INSERT INTO rtm.conversation_counters AS cc
        (conversation_id, customer_id, customer_messages, staff_messages, last_message_at)
    VALUES (NEW.conversation_id, conv.customer_id,
            (NEW.sender_type = 'customer')::integer, (NEW.sender_type = 'staff')::integer,
            NEW.created_at)
    ON CONFLICT (conversation_id) DO UPDATE
        SET customer_messages = cc.customer_messages + excluded.customer_messages,
            staff_messages = cc.staff_messages + excluded.staff_messages,
            last_message_at = greatest(cc.last_message_at, excluded.last_message_at);

    -- 3. Delivery status 'sent' for the recipient: the customer of a staff message, the
    -- assigned staff user of a customer message (none while unassigned).
    IF NEW.sender_type = 'staff' THEN
        INSERT INTO public.message_delivery_status
            (message_id, recipient_type, recipient_id, status)
        VALUES (NEW.id, 'customer', conv.customer_id, 'sent');
    ELSIF conv.assigned_user_id IS NOT NULL THEN
        INSERT INTO public.message_delivery_status
            (message_id, recipient_type, recipient_id, status)
        VALUES (NEW.id, 'staff', conv.assigned_user_id, 'sent');
    END IF;

    -- 4. Typing stops when the typist sends.
    IF NEW.sender_type = 'staff' THEN
        UPDATE public.message_typing_indicators AS t
        SET is_typing = false, expires_at = now(), updated_at = now()
        WHERE t.is_typing AND t.conversation_id = NEW.conversation_id
          AND t.user_id = NEW.sender_id;
    ELSE
        UPDATE public.message_typing_indicators AS t
        SET is_typing = false, expires_at = now(), updated_at = now()
        WHERE t.is_typing AND t.conversation_id = NEW.conversation_id
          AND t.customer_id = NEW.sender_id;
    END IF;

    -- 5. Search's words (0018).
    IF NEW.deleted_at IS NULL THEN
        INSERT INTO rtm.message_search (created_at, id, conversation_id, document)
        VALUES (NEW.created_at, NEW.id, NEW.conversation_id,
                to_tsvector('simple'::regconfig, NEW.content));
    END IF;

    -- 6. The webhook event (0016), when anyone subscribes to it.
    IF EXISTS (SELECT 1 FROM rtm.webhooks AS w WHERE 'message.created' = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue('message.created', NEW.conversation_id,
                                    rtm.webhook_message_data(NEW));
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER zz_lock_conversation ON public.customer_messages;
DROP TRIGGER zz_order_message ON public.customer_messages;
DROP TRIGGER customer_messages_after_insert ON public.customer_messages;
DROP TRIGGER message_search_insert ON public.customer_messages;
DROP TRIGGER webhook_event ON public.customer_messages;
DROP FUNCTION rtm.order_message();
DROP FUNCTION rtm.customer_messages_after_insert();
DROP FUNCTION rtm.message_search_insert();

CREATE TRIGGER zz_lock_conversation BEFORE UPDATE OR DELETE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.lock_conversation();
CREATE TRIGGER zz_lock_and_order BEFORE INSERT ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.message_lock_and_order();
CREATE TRIGGER zzz_message_inserted AFTER INSERT ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.message_inserted();
REVOKE ALL ON FUNCTION rtm.message_lock_and_order(), rtm.message_inserted() FROM PUBLIC;
