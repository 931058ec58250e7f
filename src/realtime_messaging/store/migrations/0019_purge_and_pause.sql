-- 0019_purge_and_pause: webhook subscriptions that can be paused (docs/webhooks.md,
-- "Pausing"), and the purge of stored files nobody can reach any more (docs/files.md,
-- "Purging").
--
-- Pausing. Until now an inactive subscription received nothing: its events were simply not
-- written. A paused one keeps receiving them in the outbox, where they wait, parked at
-- next_attempt_at = 'infinity' (outside the worker's claim, which reads due rows only), until it
-- is resumed: then they go out in order. The retry window of a parked event counts from its
-- resume (window_from), so a pause never makes an event expire.
--
-- Purging. The bytes of a file live outside the database, so no foreign key can remove them.
-- Every deleted rtm.attachments row, whatever deleted it (a message deleted or edited, a
-- conversation deleted by cascade, an upload never sent and expired), leaves its storage key in
-- rtm.storage_purge, in the same transaction; the server's purge worker deletes the objects and
-- the queue rows (server/purge.py).

-- -- Pausing --------------------------------------------------------------------------------

-- NULL: the event's created_at. Set when the subscription is resumed.
ALTER TABLE rtm.webhook_outbox ADD COLUMN window_from timestamptz;
COMMENT ON COLUMN rtm.webhook_outbox.window_from IS
    'Start of the retry window (NULL: created_at); reset when a paused subscription resumes.';

-- The parked events of a subscription: found at resume, and by the worker's sweep for events
-- parked by a writer that read the subscription as paused just before its resume committed.
CREATE INDEX webhook_outbox_parked_idx ON rtm.webhook_outbox (webhook_id, id)
    WHERE next_attempt_at = 'infinity' AND delivered_at IS NULL AND dead_at IS NULL;

CREATE OR REPLACE FUNCTION rtm.webhook_enqueue(event text, conv uuid, data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    eid uuid := gen_random_uuid();
    due integer;
BEGIN
    -- Every subscription to the event; a paused one's row is parked until its resume.
    WITH written AS (
        INSERT INTO rtm.webhook_outbox
            (event_id, webhook_id, event_type, conversation_id, payload, next_attempt_at)
        SELECT eid, w.id, event, conv, jsonb_build_object(
                   'id', eid,
                   'type', event,
                   'createdAt', to_jsonb(clock_timestamp()),
                   'data', data),
               CASE WHEN w.active THEN clock_timestamp() ELSE 'infinity' END
        FROM rtm.webhooks AS w
        WHERE event = ANY (w.events)
        RETURNING next_attempt_at
    )
    SELECT count(*) FILTER (WHERE next_attempt_at < 'infinity') INTO due FROM written;
    IF due > 0 THEN
        -- One notification per transaction: identical ones are folded together at commit.
        PERFORM pg_notify('rtm_webhooks', '');
    END IF;
END;
$$;

-- The trigger functions of 0016, with the subscription test no longer limited to active ones.
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
        PERFORM rtm.webhook_enqueue(event, NEW.conversation_id, jsonb_build_object(
            'id', NEW.id,
            'conversationId', NEW.conversation_id,
            'senderType', NEW.sender_type,
            'senderId', NEW.sender_id,
            'content', NEW.content,
            'attachments', NEW.attachments,
            'clientMessageId', NEW.client_message_id,
            'createdAt', NEW.created_at,
            'editedAt', NEW.edited_at,
            'deletedAt', NEW.deleted_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION rtm.webhook_delivery_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rtm.webhooks AS w WHERE 'delivery.failed' = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue('delivery.failed', NEW.conversation_id, jsonb_build_object(
            'messageId', NEW.message_id,
            'conversationId', NEW.conversation_id,
            'recipientType', NEW.recipient_type,
            'recipientId', NEW.recipient_id,
            'status', NEW.status,
            'failedReason', NEW.failed_reason,
            'updatedAt', NEW.updated_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION rtm.webhook_conversation_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    data jsonb;
BEGIN
    data := jsonb_build_object(
        'conversationId', NEW.id,
        'customerId', NEW.customer_id,
        'subject', NEW.subject,
        'status', NEW.status,
        'assignedUserId', NEW.assigned_user_id,
        'updatedAt', NEW.updated_at);
    IF NEW.assigned_user_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.assigned_user_id IS DISTINCT FROM OLD.assigned_user_id)
       AND EXISTS (SELECT 1 FROM rtm.webhooks AS w
                   WHERE 'conversation.assigned' = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue('conversation.assigned', NEW.id, data || jsonb_build_object(
            'previousAssignedUserId',
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.assigned_user_id END));
    END IF;
    IF NEW.status = 'closed' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'closed')
       AND EXISTS (SELECT 1 FROM rtm.webhooks AS w WHERE 'conversation.closed' = ANY (w.events))
    THEN
        PERFORM rtm.webhook_enqueue('conversation.closed', NEW.id, data);
    END IF;
    RETURN NULL;
END;
$$;

-- -- Purging --------------------------------------------------------------------------------

CREATE TABLE rtm.storage_purge (
    -- The object to delete from the store; once per key, however many deletes named it.
    storage_key     text        PRIMARY KEY
                                CONSTRAINT storage_purge_storage_key_check
                                CHECK (length(storage_key) BETWEEN 1 AND 200),
    queued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Failed store deletes are tried again later, with backoff.
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text
);
CREATE INDEX storage_purge_due_idx ON rtm.storage_purge (next_attempt_at);
COMMENT ON TABLE rtm.storage_purge IS
    'Stored objects whose attachment row is gone: deleted from the store by the purge worker.';

-- Uploads never sent, oldest first: the worker expires them after RTM_UPLOAD_PENDING_TTL.
CREATE INDEX attachments_unsent_created_at_idx ON rtm.attachments (created_at)
    WHERE message_id IS NULL;

CREATE FUNCTION rtm.attachments_queue_purge() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO rtm.storage_purge (storage_key)
    SELECT storage_key FROM gone
    ON CONFLICT (storage_key) DO NOTHING;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION rtm.attachments_queue_purge() IS
    'After attachment rows are deleted (any way): their objects are queued for the purge.';

-- Statement level: a conversation's cascade queues its files in one insert per statement.
CREATE TRIGGER attachments_queue_purge AFTER DELETE ON rtm.attachments
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.attachments_queue_purge();

-- A message's files go with it: when it becomes a tombstone, when an edit drops file elements
-- from it, and when its row is deleted (before the row goes: the foreign key would otherwise
-- set message_id to NULL first, and the file would look like an unsent upload of its sender).
CREATE FUNCTION rtm.attachments_release() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM rtm.attachments AS a WHERE a.message_id = OLD.id;
        RETURN OLD;
    END IF;
    DELETE FROM rtm.attachments AS a
    WHERE a.message_id = NEW.id
      AND (NEW.deleted_at IS NOT NULL
           OR a.id NOT IN (SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(NEW.attachments) e
                           WHERE jsonb_typeof(e) = 'object' AND e ->> 'type' = 'file'));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION rtm.attachments_release() IS
    'A deleted message, or file elements an edit removed: their attachment rows are deleted.';

CREATE TRIGGER attachments_release BEFORE DELETE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.attachments_release();
-- Only messages that had attachments pay for it.
CREATE TRIGGER attachments_release_update AFTER UPDATE ON public.customer_messages
    FOR EACH ROW
    WHEN (jsonb_typeof(OLD.attachments) = 'array' AND OLD.attachments <> '[]'::jsonb
          AND (NEW.attachments IS DISTINCT FROM OLD.attachments
               OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at))
    EXECUTE FUNCTION rtm.attachments_release();

-- Files deleted and sent before this migration: the tombstones of 0014 kept their rows.
DELETE FROM rtm.attachments AS a
USING public.customer_messages AS m
WHERE m.id = a.message_id AND m.deleted_at IS NOT NULL;

REVOKE ALL ON rtm.storage_purge FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION rtm.attachments_queue_purge(), rtm.attachments_release() FROM PUBLIC;
