-- Presence from live connections (docs/presence.md explains the semantics).
--
-- Every server process registers itself and heartbeats; every live WebSocket connection of an
-- identified participant (a staff user or a customer) is a row owned by its process. Presence
-- is derived from these rows by rtm.settle_presence(), which every process runs on a timer:
--   online  while at least one connection is open and active (activity within away_after);
--   away    while connections are open but all of them are idle;
--   offline once no connection has been open for the grace period.
-- A process that stops heartbeating is declared dead by whichever process settles next: its
-- connections count as closed at its last heartbeat, so no participant stays online as a ghost.
-- Typing indicators reported over a connection are owned by it and end when it closes.

CREATE TABLE rtm.server_processes (
    id           text        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rtm.live_connections (
    id               text        PRIMARY KEY,
    process_id       text        NOT NULL,
    user_id          uuid        REFERENCES public.users (id) ON DELETE CASCADE,
    customer_id      uuid        REFERENCES public.customers (id) ON DELETE CASCADE,
    connected_at     timestamptz NOT NULL DEFAULT now(),
    -- The last activity the client reported (not heartbeats, which clients send by themselves).
    last_active_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when the participant is declared away (explicitly, or by the sweep): the connection
    -- counts as idle until activity newer than this.
    idle_declared_at timestamptz,
    closed_at        timestamptz,
    CONSTRAINT live_connections_one_participant CHECK (num_nonnulls(user_id, customer_id) = 1)
);
CREATE INDEX live_connections_user_idx ON rtm.live_connections (user_id)
    WHERE user_id IS NOT NULL;
CREATE INDEX live_connections_customer_idx ON rtm.live_connections (customer_id)
    WHERE customer_id IS NOT NULL;
CREATE INDEX live_connections_process_idx ON rtm.live_connections (process_id)
    WHERE closed_at IS NULL;
CREATE INDEX live_connections_closed_idx ON rtm.live_connections (closed_at)
    WHERE closed_at IS NOT NULL;

CREATE TABLE rtm.typing_owners (
    indicator_id  uuid PRIMARY KEY
                  REFERENCES public.message_typing_indicators (id) ON DELETE CASCADE,
    connection_id text NOT NULL
);
CREATE INDEX typing_owners_connection_idx ON rtm.typing_owners (connection_id);

-- The rules look only at what changed since their last round, so that a round costs nothing
-- with ten thousand participants online and idle: connections that crossed the idle line since
-- then (by last_active_at), closed connections, and participants given a status while no
-- connection of theirs was open (recorded here by the trigger below).
CREATE INDEX live_connections_active_idx ON rtm.live_connections (last_active_at)
    WHERE closed_at IS NULL;

CREATE TABLE rtm.presence_rules_state (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    idle_line timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO rtm.presence_rules_state DEFAULT VALUES;

CREATE TABLE rtm.presence_unbacked (
    presence_id uuid        PRIMARY KEY REFERENCES public.user_presence (id) ON DELETE CASCADE,
    since       timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON rtm.server_processes, rtm.live_connections, rtm.typing_owners,
    rtm.presence_rules_state, rtm.presence_unbacked FROM PUBLIC;

-- Whether a connection counts as active at p_now.
CREATE FUNCTION rtm.connection_active(
    c rtm.live_connections, p_now timestamptz, p_away_after double precision
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT c.closed_at IS NULL
       AND c.last_active_at > p_now - make_interval(secs => p_away_after)
       AND (c.idle_declared_at IS NULL OR c.idle_declared_at < c.last_active_at)
$$;

-- An explicit status written by anyone (update_user_presence, the HTTP API, psql) and the
-- connections agree: "online" counts as activity on every open connection of the participant,
-- "away" declares them all idle until the next activity. (The sweep's own writes come through
-- here too, which changes nothing: it only writes what the connections already say.)
CREATE FUNCTION rtm.presence_to_connections() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rtm.live_connections AS c
                   WHERE (c.user_id = NEW.user_id OR c.customer_id = NEW.customer_id)
                     AND c.closed_at IS NULL) THEN
        -- Nothing backs this status: the rules take it offline after the grace.
        INSERT INTO rtm.presence_unbacked (presence_id) VALUES (NEW.id)
        ON CONFLICT (presence_id) DO UPDATE SET since = excluded.since;
        RETURN NULL;
    END IF;
    IF NEW.status = 'online' THEN
        UPDATE rtm.live_connections AS c
        SET last_active_at = greatest(c.last_active_at, now()), idle_declared_at = NULL
        WHERE c.closed_at IS NULL
          AND (c.user_id = NEW.user_id OR c.customer_id = NEW.customer_id)
          AND (c.last_active_at < now() OR c.idle_declared_at IS NOT NULL);
    ELSIF NEW.status = 'away' THEN
        UPDATE rtm.live_connections AS c
        SET idle_declared_at = now()
        WHERE c.closed_at IS NULL
          AND (c.user_id = NEW.user_id OR c.customer_id = NEW.customer_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER user_presence_to_connections
    AFTER INSERT OR UPDATE OF status ON public.user_presence
    FOR EACH ROW WHEN (NEW.status IN ('online', 'away'))
    EXECUTE FUNCTION rtm.presence_to_connections();

-- One round of the rules at p_now (a parameter, so that tests can move the clock). Idempotent;
-- any number of processes may run it concurrently. Returns how many presence rows changed.
CREATE FUNCTION rtm.settle_presence(
    p_now timestamptz,
    p_away_after double precision,
    p_grace double precision,
    p_dead_after double precision
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_dead    record;
    v_line    timestamptz;
    v_cutoff  timestamptz;
    v_changed integer := 0;
    v_n       integer;
BEGIN
    -- One process settles at a time; the others have nothing to add this round.
    IF NOT pg_try_advisory_xact_lock(hashtext('rtm.settle_presence')) THEN
        RETURN 0;
    END IF;
    -- Dead processes: their connections closed as of their last heartbeat.
    FOR v_dead IN
        SELECT p.id, p.heartbeat_at FROM rtm.server_processes AS p
        WHERE p.heartbeat_at < p_now - make_interval(secs => p_dead_after)
        FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE rtm.live_connections AS c SET closed_at = least(v_dead.heartbeat_at, p_now)
        WHERE c.process_id = v_dead.id AND c.closed_at IS NULL;
        DELETE FROM rtm.server_processes AS p WHERE p.id = v_dead.id;
    END LOOP;

    -- Typing reported over a connection that is gone.
    DELETE FROM public.message_typing_indicators AS t
    USING rtm.typing_owners AS o, rtm.live_connections AS c
    WHERE o.indicator_id = t.id AND c.id = o.connection_id AND c.closed_at IS NOT NULL;

    -- Online, but every open connection idle: away, last seen at the last activity. Only
    -- participants with a connection that crossed the idle line since the last round.
    SELECT r.idle_line INTO v_line FROM rtm.presence_rules_state AS r FOR UPDATE;
    v_cutoff := p_now - make_interval(secs => p_away_after);
    UPDATE public.user_presence AS p
    SET status = 'away', last_seen_at = s.last_active
    FROM (
        SELECT p2.id, max(c.last_active_at) AS last_active
        FROM (SELECT DISTINCT c0.user_id, c0.customer_id FROM rtm.live_connections AS c0
              WHERE c0.closed_at IS NULL
                AND c0.last_active_at > v_line AND c0.last_active_at <= v_cutoff) AS crossed
        JOIN public.user_presence AS p2
          ON p2.user_id = crossed.user_id OR p2.customer_id = crossed.customer_id
        JOIN rtm.live_connections AS c
          ON (c.user_id = p2.user_id OR c.customer_id = p2.customer_id) AND c.closed_at IS NULL
        WHERE p2.status = 'online'
        GROUP BY p2.id
        HAVING NOT bool_or(rtm.connection_active(c, p_now, p_away_after))
    ) AS s
    WHERE p.id = s.id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    UPDATE rtm.presence_rules_state SET idle_line = greatest(v_line, v_cutoff);

    -- Online or away, but no connection open within the grace period (and no explicit status
    -- set within it): offline, last seen when the last connection closed. Only participants
    -- with a closed connection, or a status nothing backs.
    UPDATE public.user_presence AS p
    SET status = 'offline',
        last_seen_at = coalesce(
            (SELECT max(c.closed_at) FROM rtm.live_connections AS c
             WHERE c.user_id = p.user_id OR c.customer_id = p.customer_id),
            p.last_seen_at)
    FROM (
        SELECT p2.id FROM rtm.live_connections AS c0
        JOIN public.user_presence AS p2
          ON p2.user_id = c0.user_id OR p2.customer_id = c0.customer_id
        WHERE c0.closed_at IS NOT NULL AND c0.closed_at <= p_now - make_interval(secs => p_grace)
        UNION
        SELECT u.presence_id FROM rtm.presence_unbacked AS u
        WHERE u.since <= p_now - make_interval(secs => p_grace)
    ) AS candidates
    WHERE p.id = candidates.id
      AND p.status <> 'offline'
      AND p.last_seen_at < p_now - make_interval(secs => p_grace)
      AND NOT EXISTS (
          SELECT 1 FROM rtm.live_connections AS c
          WHERE (c.user_id = p.user_id OR c.customer_id = p.customer_id)
            AND (c.closed_at IS NULL OR c.closed_at > p_now - make_interval(secs => p_grace)));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    DELETE FROM rtm.presence_unbacked AS u
    WHERE u.since <= p_now - make_interval(secs => p_grace);

    -- Closed connections past the grace period have said all they had to say.
    DELETE FROM rtm.live_connections AS c
    WHERE c.closed_at IS NOT NULL AND c.closed_at < p_now - make_interval(secs => p_grace);
    RETURN v_changed;
END;
$$;
