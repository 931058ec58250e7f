-- Broadcast from the database, and private channels authorized by policy (docs/db-broadcast.md).
--
-- Supabase's schema "realtime": the table realtime.messages and the functions realtime.send,
-- realtime.broadcast_changes and realtime.topic, with Supabase's signatures and payloads, so
-- that SQL and policies written for Supabase work unchanged.
--
-- Supabase streams the table by logical replication. Here a trigger puts each broadcast row into
-- the change feed (0004): it is delivered only if its transaction commits, after the changes
-- committed before it, and a client that reconnects resumes it from a position like any change.
-- Before queueing, the trigger takes a lock on the message's topic until commit (as
-- rtm.lock_conversation does for a conversation), so within one topic the queue, and thus the
-- feed, follows commit order.
--
-- Private channels on topics that are not the server's own (conversation:, presence:,
-- customer:, staff:) are authorized by row-level security on realtime.messages, as Supabase
-- does: a SELECT policy lets a caller receive, an INSERT policy lets them send. There are no
-- policies by default: nobody but the service role may join such a private channel.

CREATE SCHEMA IF NOT EXISTS realtime;

CREATE TABLE realtime.messages (
    topic       text      NOT NULL,  -- the sub-topic, without "realtime:"
    extension   text      NOT NULL,  -- 'broadcast' or 'presence'
    payload     jsonb,
    event       text,
    private     boolean   DEFAULT false,
    updated_at  timestamp NOT NULL DEFAULT now(),
    inserted_at timestamp NOT NULL DEFAULT now(),
    id          uuid      NOT NULL DEFAULT gen_random_uuid(),
    PRIMARY KEY (id, inserted_at)
);

-- Supabase's index for private broadcasts, and the one retention pruning uses.
CREATE INDEX messages_inserted_at_topic_index ON realtime.messages (inserted_at DESC, topic)
    WHERE extension = 'broadcast' AND private IS TRUE;
CREATE INDEX messages_inserted_at_idx ON realtime.messages (inserted_at);

-- A resuming channel reads the broadcasts of its topic from the log.
CREATE INDEX change_log_broadcast_idx ON rtm.change_log ((record ->> 'topic'), pos)
    WHERE table_name = 'realtime.messages';

ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

-- The service role may do anything, even where the role was created without BYPASSRLS (0003).
CREATE POLICY service_role_all ON realtime.messages
    FOR ALL TO service_role USING (true) WITH CHECK (true);

GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated, service_role;

-- The topic a policy is evaluated for: set by realtime.send and by the server when it checks a
-- private channel; NULL when not set.
CREATE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- Sends a broadcast to the channels joined to realtime:<topic> when the transaction commits.
-- Runs with the caller's rights (INSERT policies apply); any error becomes a warning and
-- nothing is sent, the caller's transaction goes on (as on Supabase).
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    generated_id  uuid;
    final_payload jsonb;
BEGIN
    BEGIN
        generated_id := gen_random_uuid();
        IF payload ? 'id' THEN
            final_payload := payload;
        ELSE
            final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
        END IF;
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
        VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
    END;
END;
$$;

-- For a row trigger: broadcasts the change, {"old_record", "record", "operation", "table",
-- "schema"}, privately. Unlike send, its errors abort the writer's transaction.
CREATE FUNCTION realtime.broadcast_changes(
    topic_name text,
    event_name text,
    operation text,
    table_name text,
    table_schema text,
    new record,
    old record,
    level text DEFAULT 'ROW'
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    row_data jsonb := '{}'::jsonb;
BEGIN
    IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
    END IF;
    IF operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE' THEN
        row_data := jsonb_build_object(
            'old_record', old, 'record', new, 'operation', operation,
            'table', table_name, 'schema', table_schema);
        PERFORM realtime.send(row_data, event_name, topic_name);
    ELSE
        RAISE EXCEPTION 'Unexpected operation type: %', operation;
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END;
$$;

GRANT EXECUTE ON FUNCTION
    realtime.topic(),
    realtime.send(jsonb, text, text, boolean),
    realtime.broadcast_changes(text, text, text, text, text, record, record, text)
TO anon, authenticated, service_role;

-- Queues a broadcast row for the change feed. The topic lock (an advisory lock in its own key
-- space, 'RTMB', until commit) makes senders to one topic queue in commit order. The rows the
-- server inserts to check a private channel's policies (rtm.access_check set, always rolled
-- back) are not queued, so that a check never waits for a writer's commit.
CREATE FUNCTION rtm.capture_broadcast() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('rtm.access_check', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(1381256514, hashtext(NEW.topic));
    INSERT INTO rtm.change_queue (table_name, op, record)
    VALUES ('realtime.messages', 'INSERT', jsonb_build_object(
        'id', NEW.id, 'topic', NEW.topic, 'event', NEW.event, 'payload', NEW.payload,
        'private', coalesce(NEW.private, false)));
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION rtm.capture_broadcast() FROM PUBLIC;

CREATE TRIGGER zz_capture_broadcast AFTER INSERT ON realtime.messages
    FOR EACH ROW WHEN (NEW.extension = 'broadcast')
    EXECUTE FUNCTION rtm.capture_broadcast();
