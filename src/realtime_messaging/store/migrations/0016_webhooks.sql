-- 0016_webhooks: webhook subscriptions and the durable outbox they are delivered from
-- (docs/webhooks.md).
--
-- An event is written to rtm.webhook_outbox by a trigger, in the transaction of the change that
-- caused it: it commits with the change or not at all, so a crash never loses one. The outbox
-- is fanned out when the event is written: one row per (event, matching active subscription),
-- sharing one event id. Each row then carries its own retry state, so a failing endpoint never
-- holds back the others, and ordering is per (subscription, conversation).
--
-- With no subscription for an event, its trigger costs one look at rtm.webhooks (a handful of
-- rows at most) and writes nothing; the trigger WHEN clauses keep the update triggers from
-- running at all for the updates that are not events (delivered, read, a subject change).

CREATE TABLE rtm.webhooks (
    id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    url                  text        NOT NULL
                                     CONSTRAINT webhooks_url_check
                                     CHECK (url ~ '^https?://' AND length(url) <= 2048),
    events               text[]      NOT NULL
                                     CONSTRAINT webhooks_events_check CHECK (
                                         cardinality(events) BETWEEN 1 AND 6
                                         AND events <@ ARRAY['message.created', 'message.updated',
                                             'message.deleted', 'delivery.failed',
                                             'conversation.assigned', 'conversation.closed']
                                     ),
    -- Kept as given: signing needs the secret itself, not a hash of it. Never returned by the API.
    secret               text        NOT NULL
                                     CONSTRAINT webhooks_secret_check
                                     CHECK (length(secret) BETWEEN 16 AND 256),
    active               boolean     NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- The endpoint's health, kept by the worker after each attempt (the admin list, /metrics).
    consecutive_failures integer     NOT NULL DEFAULT 0,
    last_error           text,
    last_failure_at      timestamptz,
    last_success_at      timestamptz
);

CREATE TABLE rtm.webhook_outbox (
    -- Also the order of delivery within a (subscription, conversation): a conversation's writers
    -- hold its row lock (rtm.lock_conversation) when the trigger takes the next id, so ids
    -- follow commit order there.
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL,
    webhook_id      uuid        NOT NULL
                                CONSTRAINT webhook_outbox_webhook_id_fkey
                                REFERENCES rtm.webhooks (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    conversation_id uuid,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer     NOT NULL DEFAULT 0,
    delivered_at    timestamptz,
    -- Given up: still failing when the retry window (a day by default) ran out.
    dead_at         timestamptz,
    last_error      text
);
-- The worker's claim: pending rows, due first.
CREATE INDEX webhook_outbox_due_idx ON rtm.webhook_outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- "Is an earlier event of this conversation still pending for this subscription?"
CREATE INDEX webhook_outbox_order_idx ON rtm.webhook_outbox (webhook_id, conversation_id, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- Pruning delivered and dead rows after their retention.
CREATE INDEX webhook_outbox_created_at_idx ON rtm.webhook_outbox (created_at);

CREATE TABLE rtm.webhook_attempts (
    id          bigserial        PRIMARY KEY,
    outbox_id   bigint           NOT NULL
                                 CONSTRAINT webhook_attempts_outbox_id_fkey
                                 REFERENCES rtm.webhook_outbox (id) ON DELETE CASCADE,
    webhook_id  uuid             NOT NULL
                                 CONSTRAINT webhook_attempts_webhook_id_fkey
                                 REFERENCES rtm.webhooks (id) ON DELETE CASCADE,
    event_id    uuid             NOT NULL,
    event_type  text             NOT NULL,
    attempt     integer          NOT NULL,
    -- NULL: no HTTP answer (refused target, connection error, timeout).
    status_code integer,
    error       text,
    duration_ms double precision NOT NULL,
    at          timestamptz      NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_attempts_webhook_idx ON rtm.webhook_attempts (webhook_id, id);
CREATE INDEX webhook_attempts_outbox_idx ON rtm.webhook_attempts (outbox_id);

-- Writes one outbox row per active subscription to the event; wakes the workers at commit.
CREATE FUNCTION rtm.webhook_enqueue(event text, conv uuid, data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    eid uuid := gen_random_uuid();
BEGIN
    INSERT INTO rtm.webhook_outbox (event_id, webhook_id, event_type, conversation_id, payload)
    SELECT eid, w.id, event, conv, jsonb_build_object(
               'id', eid,
               'type', event,
               'createdAt', to_jsonb(clock_timestamp()),
               'data', data)
    FROM rtm.webhooks AS w
    WHERE w.active AND event = ANY (w.events);
    IF FOUND THEN
        -- One notification per transaction: identical ones are folded together at commit.
        PERFORM pg_notify('rtm_webhooks', '');
    END IF;
END;
$$;

-- The trigger functions are PL/pgSQL, whose statements are planned once per session: an SQL
-- function called from a trigger would be planned again on every row.
CREATE FUNCTION rtm.webhook_message_event() RETURNS trigger
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
    -- The cheap test first: most installations subscribe to nothing, or not to this.
    IF EXISTS (SELECT 1 FROM rtm.webhooks AS w WHERE w.active AND event = ANY (w.events)) THEN
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

CREATE FUNCTION rtm.webhook_delivery_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rtm.webhooks AS w
               WHERE w.active AND 'delivery.failed' = ANY (w.events)) THEN
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

CREATE FUNCTION rtm.webhook_conversation_event() RETURNS trigger
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
                   WHERE w.active AND 'conversation.assigned' = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue('conversation.assigned', NEW.id, data || jsonb_build_object(
            'previousAssignedUserId',
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.assigned_user_id END));
    END IF;
    IF NEW.status = 'closed' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'closed')
       AND EXISTS (SELECT 1 FROM rtm.webhooks AS w
                   WHERE w.active AND 'conversation.closed' = ANY (w.events)) THEN
        PERFORM rtm.webhook_enqueue('conversation.closed', NEW.id, data);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_event AFTER INSERT ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.webhook_message_event();
CREATE TRIGGER webhook_event_update AFTER UPDATE ON public.customer_messages
    FOR EACH ROW
    WHEN (NEW.content IS DISTINCT FROM OLD.content
          OR NEW.attachments IS DISTINCT FROM OLD.attachments
          OR NEW.edited_at IS DISTINCT FROM OLD.edited_at
          OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at)
    EXECUTE FUNCTION rtm.webhook_message_event();
CREATE TRIGGER webhook_event AFTER INSERT ON public.message_delivery_status
    FOR EACH ROW WHEN (NEW.status = 'failed')
    EXECUTE FUNCTION rtm.webhook_delivery_event();
CREATE TRIGGER webhook_event_update AFTER UPDATE ON public.message_delivery_status
    FOR EACH ROW WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION rtm.webhook_delivery_event();
CREATE TRIGGER webhook_event AFTER INSERT ON public.conversations
    FOR EACH ROW WHEN (NEW.assigned_user_id IS NOT NULL OR NEW.status = 'closed')
    EXECUTE FUNCTION rtm.webhook_conversation_event();
CREATE TRIGGER webhook_event_update AFTER UPDATE ON public.conversations
    FOR EACH ROW
    WHEN ((NEW.assigned_user_id IS NOT NULL
           AND NEW.assigned_user_id IS DISTINCT FROM OLD.assigned_user_id)
          OR (NEW.status = 'closed' AND OLD.status IS DISTINCT FROM 'closed'))
    EXECUTE FUNCTION rtm.webhook_conversation_event();

-- Only the triggers (as definer) and the server's own connection touch these tables.
REVOKE ALL ON rtm.webhooks, rtm.webhook_outbox, rtm.webhook_attempts
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE rtm.webhook_outbox_id_seq, rtm.webhook_attempts_id_seq
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION rtm.webhook_enqueue(text, uuid, jsonb), rtm.webhook_message_event(),
    rtm.webhook_delivery_event(), rtm.webhook_conversation_event()
    FROM PUBLIC;
