-- The PostgreSQL broker between server processes (broker/postgres.py explains the reading side).
--
-- Without Redis, processes on one database hand each other broadcasts, presence diffs and
-- control envelopes through this table: every process appends what it publishes, in batches,
-- through rtm.broker_publish(), and every process reads everything after its cursor, woken by
-- NOTIFY rtm_broker or by its own 100 ms poll. Rows live for seconds (the broker deletes them
-- after its retention), so they are nothing to keep:
--
-- * UNLOGGED: no WAL for the rows, so a publishing transaction writes none and its commit does
--   not wait for a WAL flush; unlogged tables never enter a logical-replication feed either.
--   A crash empties the table: what was in flight is lost, as at-most-once delivery allows.
-- * The id sequence is unlogged for the same reason (a logged one writes WAL every 32 values,
--   making most batches wait for a flush). A crash restarts it with the table; readers notice
--   ids going backwards and start over from the beginning.

CREATE UNLOGGED SEQUENCE rtm.broker_messages_id_seq;

CREATE UNLOGGED TABLE rtm.broker_messages (
    id         bigint      PRIMARY KEY DEFAULT nextval('rtm.broker_messages_id_seq'),
    -- t:<topic> (topic traffic), ctl (every process) or n:<node id> (one process).
    channel    text        NOT NULL,
    -- The envelope in broker/wire.py's encoding, which names the publishing process.
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE rtm.broker_messages_id_seq OWNED BY rtm.broker_messages.id;

-- Appends one batch and wakes every reader, in one transaction. Readers keep a cursor and read
-- "id > cursor", which is gap-free only if ids become visible in id order: a transaction that
-- took a smaller id but committed later would be skipped by a reader that had already moved
-- past it. So every batch takes this transaction-level advisory lock before its ids are drawn
-- and holds it until its commit is visible: batches commit one at a time, in id order.
-- (NOTIFY serialises notifying commits cluster-wide anyway; one notification per batch, with an
-- empty payload, since it only says "look": identical ones within a transaction fold into one,
-- and the 8000-byte payload limit never applies.) Anything appending rows must go through here.
CREATE FUNCTION rtm.broker_publish(p_channels text[], p_bodies bytea[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(5932451680683707218);  -- 'RTM_BRKR'
    INSERT INTO rtm.broker_messages (channel, body)
    SELECT c, b FROM unnest(p_channels, p_bodies) AS u (c, b);
    PERFORM pg_notify('rtm_broker', '');
END
$$;

-- Only the server's own connections use the broker: clients (anon, authenticated, and the
-- service role the API runs trusted requests as) can neither read what other processes
-- exchange nor inject envelopes.
REVOKE ALL ON rtm.broker_messages FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE rtm.broker_messages_id_seq FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION rtm.broker_publish(text[], bytea[])
    FROM PUBLIC, anon, authenticated, service_role;
ALTER TABLE rtm.broker_messages ENABLE ROW LEVEL SECURITY;
