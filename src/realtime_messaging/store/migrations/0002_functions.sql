-- 0002_functions: caller identity, the rules that need other rows (triggers), the unread
-- counters, and the five documented SQL functions.
--
-- Errors raised here use stable SQLSTATEs (docs/database.md has the table):
--   23514 check_violation        a data rule; CONSTRAINT names the rule (like a real constraint)
--   23503 foreign_key_violation  a referenced message does not exist (named like the real FK)
--   22023 invalid_parameter_value  bad function arguments
--   P0002 no_data_found          the message / conversation / reader does not exist or is not
--                                visible to the caller (the two are not told apart on purpose)
--   42501 insufficient_privilege the caller may not act as that reader
--
-- Functions that read or write regardless of the caller (membership checks, counters, delivery
-- rows) are SECURITY DEFINER with a fixed search_path, and name every table with its schema, so
-- that nothing the caller puts on its search_path (a temporary table, say) can stand in.
-- The five documented functions are SECURITY INVOKER: they run with the caller's row-level
-- security, and add explicit checks only to turn "no rows" into clear errors.

-- Caller identity (Supabase style) ---------------------------------------------------------------
--
-- The server sets, per transaction, the database role (anon / authenticated / service_role) and
-- the verified JWT claims in request.jwt.claims. Staff claims: {"role": "authenticated",
-- "sub": <users.id>}; customer claims add "customer_id": <customers.id>.

CREATE FUNCTION rtm.claims() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}'::jsonb)
$$;
COMMENT ON FUNCTION rtm.claims() IS 'The JWT claims of the current request ({} when none).';

-- A claim that is not a well-formed UUID identifies nobody (rather than failing every query).
CREATE FUNCTION rtm.uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        THEN value::uuid
    END
$$;

CREATE FUNCTION rtm.current_user_id() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN c ->> 'role' = 'authenticated' AND c ->> 'customer_id' IS NULL
        THEN rtm.uuid_or_null(c ->> 'sub')
    END
    FROM rtm.claims() AS t (c)
$$;
COMMENT ON FUNCTION rtm.current_user_id() IS
    'The staff user named by the claims'' sub (NULL for customers and everyone else).';

CREATE FUNCTION rtm.current_customer_id() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN c ->> 'role' = 'authenticated' THEN rtm.uuid_or_null(c ->> 'customer_id')
    END
    FROM rtm.claims() AS t (c)
$$;
COMMENT ON FUNCTION rtm.current_customer_id() IS 'The customer named by the claims, or NULL.';

-- SECURITY DEFINER: the customers' row rules hide most of public.users from them, but whether the
-- caller is staff must not depend on what the caller can see. PL/pgSQL rather than SQL here and
-- below: a SECURITY DEFINER SQL function cannot be inlined and is planned again on every call,
-- while PL/pgSQL keeps its plans for the session (about three times faster).
CREATE FUNCTION rtm.is_staff() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = rtm.current_user_id());
END
$$;
COMMENT ON FUNCTION rtm.is_staff() IS
    'Authenticated, no customer claim, and sub is an existing users.id.';

-- The service role: the database role in effect, or the claims when the role is not one of the
-- end-user roles (claims alone never lift anon or authenticated).
CREATE FUNCTION rtm.is_service() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT current_user = 'service_role'
        OR (coalesce(rtm.claims() ->> 'role', '') = 'service_role'
            AND current_user NOT IN ('anon', 'authenticated'))
$$;
COMMENT ON FUNCTION rtm.is_service() IS 'True for the service role (trusted back ends).';

-- The conversations of the calling customer (empty for everyone else). Used by the row rules as
-- "conversation_id IN (SELECT rtm.customer_conversation_ids())", which PostgreSQL evaluates once
-- per query into a hash; SECURITY DEFINER so that it does not re-enter the row rules.
CREATE FUNCTION rtm.customer_conversation_ids() RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT c.id FROM public.conversations AS c
        WHERE c.customer_id = rtm.current_customer_id();
END
$$;

-- The staff users a calling customer may see (and whose presence): those assigned to one of
-- their conversations or who wrote in one.
CREATE FUNCTION rtm.customer_staff_ids() RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_customer_id uuid := rtm.current_customer_id();
BEGIN
    RETURN QUERY
        SELECT c.assigned_user_id
        FROM public.conversations AS c
        WHERE c.customer_id = v_customer_id AND c.assigned_user_id IS NOT NULL
        UNION
        SELECT m.sender_id
        FROM public.conversations AS c
        JOIN public.customer_messages AS m ON m.conversation_id = c.id
        WHERE c.customer_id = v_customer_id AND m.sender_type = 'staff';
END
$$;

-- The reader/actor check shared by the documented functions. A reader is a staff user or a
-- customer, exactly one. End users (roles anon and authenticated) act only as themselves,
-- except that staff, who see everything, may ask for anyone's unread count
-- (p_staff_may_name_others). Any other role (the owner, a superuser, service_role) is a trusted
-- back end and may name any reader. The reader must exist and be visible to the caller.
CREATE FUNCTION rtm.require_reader(
    p_user_id uuid,
    p_customer_id uuid,
    p_staff_may_name_others boolean DEFAULT false
) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF num_nonnulls(p_user_id, p_customer_id) <> 1 THEN
        RAISE EXCEPTION 'exactly one of user_id and customer_id must be given'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF current_user = 'anon' THEN
        RAISE EXCEPTION 'an anonymous caller cannot act as a reader'
            USING ERRCODE = 'insufficient_privilege';
    ELSIF current_user = 'authenticated' THEN
        IF rtm.current_customer_id() IS NOT NULL THEN
            IF p_customer_id IS DISTINCT FROM rtm.current_customer_id() THEN
                RAISE EXCEPTION 'a customer can act only as themselves'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        ELSIF rtm.is_staff() THEN
            IF NOT p_staff_may_name_others
               AND p_user_id IS DISTINCT FROM rtm.current_user_id() THEN
                RAISE EXCEPTION 'a staff user can act only as themselves'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        ELSE
            RAISE EXCEPTION 'the claims name no staff user or customer'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;

    IF p_user_id IS NOT NULL THEN
        PERFORM 1 FROM public.users AS u WHERE u.id = p_user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'user % not found', p_user_id USING ERRCODE = 'no_data_found';
        END IF;
    ELSE
        PERFORM 1 FROM public.customers AS c WHERE c.id = p_customer_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'customer % not found', p_customer_id USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
END
$$;

-- Conversations ----------------------------------------------------------------------------------

-- INVOKER: it needs to know who the caller is (current_user), and writes nothing elsewhere.
CREATE FUNCTION rtm.conversations_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- Who may see a conversation's rows is decided by its customer, and the realtime layer caches
    -- that decision: it must never change.
    IF NEW.customer_id IS DISTINCT FROM OLD.customer_id THEN
        RAISE EXCEPTION 'the customer of conversation % cannot change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'conversations_customer_id_immutable',
                  SCHEMA = 'public', TABLE = 'conversations', COLUMN = 'customer_id';
    END IF;
    -- Customers may rename or close their own conversation, not route it to an agent.
    IF NEW.assigned_user_id IS DISTINCT FROM OLD.assigned_user_id
       AND current_user = 'authenticated' AND rtm.current_customer_id() IS NOT NULL THEN
        RAISE EXCEPTION 'a customer cannot assign a conversation'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER conversations_before_update
    BEFORE UPDATE ON public.conversations
    FOR EACH ROW EXECUTE FUNCTION rtm.conversations_before_update();

-- Messages ---------------------------------------------------------------------------------------

CREATE FUNCTION rtm.customer_messages_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- Content may be edited; where, by whom and when a message was written may not (counters,
    -- receipts and history cursors depend on them).
    IF (NEW.conversation_id, NEW.sender_type, NEW.sender_id, NEW.client_message_id, NEW.created_at)
       IS DISTINCT FROM
       (OLD.conversation_id, OLD.sender_type, OLD.sender_id, OLD.client_message_id, OLD.created_at)
    THEN
        RAISE EXCEPTION 'the conversation, sender, client id and time of message % cannot change',
                OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'customer_messages_immutable',
                  SCHEMA = 'public', TABLE = 'customer_messages';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER customer_messages_before_update
    BEFORE UPDATE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.customer_messages_before_update();

-- After each INSERT statement, set-based over the inserted rows (a bulk load of a million messages
-- costs a few joins, not a million function calls):
--   1. every sender is a participant of the conversation;
--   2. the conversation counters;
--   3. delivery status 'sent' for the recipient;
--   4. a participant who sends a message has stopped typing.
CREATE FUNCTION rtm.customer_messages_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    -- 1. A customer writes only in their own conversation; staff are users (any staff user may
    -- write in any conversation). Missing conversations are left to the foreign key.
    SELECT n.id, n.sender_type, n.sender_id, n.conversation_id INTO bad
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    WHERE CASE n.sender_type
              WHEN 'customer' THEN n.sender_id <> c.customer_id
              ELSE NOT EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = n.sender_id)
          END
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% % is not a participant of conversation %',
                bad.sender_type, bad.sender_id, bad.conversation_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'customer_messages_sender_is_participant',
                  SCHEMA = 'public', TABLE = 'customer_messages';
    END IF;

    -- 2. Upsert, in conversation order: concurrent writers lock counter rows in the same order,
    -- so they queue instead of deadlocking.
    INSERT INTO rtm.conversation_counters AS cc
        (conversation_id, customer_id, customer_messages, staff_messages)
    SELECT n.conversation_id, c.customer_id,
           count(*) FILTER (WHERE n.sender_type = 'customer'),
           count(*) FILTER (WHERE n.sender_type = 'staff')
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    GROUP BY n.conversation_id, c.customer_id
    ORDER BY n.conversation_id
    ON CONFLICT (conversation_id) DO UPDATE
        SET customer_messages = cc.customer_messages + excluded.customer_messages,
            staff_messages = cc.staff_messages + excluded.staff_messages;

    -- 3. A staff message goes to the conversation's customer; a customer message goes to the
    -- assigned staff user, if any (other staff get a row when they read it).
    INSERT INTO public.message_delivery_status (message_id, recipient_type, recipient_id, status)
    SELECT n.id,
           CASE n.sender_type WHEN 'staff' THEN 'customer' ELSE 'staff' END,
           CASE n.sender_type WHEN 'staff' THEN c.customer_id ELSE c.assigned_user_id END,
           'sent'
    FROM inserted_messages AS n
    JOIN public.conversations AS c ON c.id = n.conversation_id
    WHERE n.sender_type = 'staff' OR c.assigned_user_id IS NOT NULL
    ORDER BY n.id;

    -- 4. Typing stops when the typist sends.
    UPDATE public.message_typing_indicators AS t
    SET is_typing = false, expires_at = now(), updated_at = now()
    FROM inserted_messages AS n
    WHERE t.is_typing
      AND t.conversation_id = n.conversation_id
      AND CASE n.sender_type
              WHEN 'staff' THEN t.user_id = n.sender_id
              ELSE t.customer_id = n.sender_id
          END;

    RETURN NULL;
END
$$;

CREATE TRIGGER customer_messages_after_insert
    AFTER INSERT ON public.customer_messages
    REFERENCING NEW TABLE AS inserted_messages
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.customer_messages_after_insert();

-- Row-level on purpose: a conversation or customer deleted with its messages deletes them through
-- foreign-key cascades, which fire row triggers reliably.
CREATE FUNCTION rtm.customer_messages_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    UPDATE rtm.conversation_counters AS cc
    SET customer_messages = cc.customer_messages - (OLD.sender_type = 'customer')::integer,
        staff_messages = cc.staff_messages - (OLD.sender_type = 'staff')::integer
    WHERE cc.conversation_id = OLD.conversation_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_messages_after_delete
    AFTER DELETE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.customer_messages_after_delete();

-- TRUNCATE fires no row triggers; start the counters again from nothing.
CREATE FUNCTION rtm.customer_messages_after_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    DELETE FROM rtm.conversation_counters;
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_messages_after_truncate
    AFTER TRUNCATE ON public.customer_messages
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.customer_messages_after_truncate();

-- Read receipts ----------------------------------------------------------------------------------

CREATE FUNCTION rtm.message_read_receipts_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    msg record;
BEGIN
    SELECT m.conversation_id, m.sender_type, c.customer_id INTO msg
    FROM public.customer_messages AS m
    JOIN public.conversations AS c ON c.id = m.conversation_id
    WHERE m.id = NEW.message_id;
    IF NOT FOUND THEN
        -- Reported as the foreign key would (it has not run yet, and the NOT NULL copies below
        -- would otherwise fail first with a less helpful message).
        RAISE EXCEPTION 'message % does not exist', NEW.message_id
            USING ERRCODE = 'foreign_key_violation',
                  CONSTRAINT = 'message_read_receipts_message_id_fkey',
                  SCHEMA = 'public', TABLE = 'message_read_receipts';
    END IF;
    NEW.conversation_id := msg.conversation_id;
    NEW.message_sender_type := msg.sender_type;
    -- A customer reads only in their own conversations.
    IF NEW.read_by_customer_id IS DISTINCT FROM msg.customer_id
       AND NEW.read_by_customer_id IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is not a participant of conversation %',
                NEW.read_by_customer_id, msg.conversation_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'message_read_receipts_reader_is_participant',
                  SCHEMA = 'public', TABLE = 'message_read_receipts';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER message_read_receipts_before_insert
    BEFORE INSERT ON public.message_read_receipts
    FOR EACH ROW EXECUTE FUNCTION rtm.message_read_receipts_before_insert();

CREATE FUNCTION rtm.message_read_receipts_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- A receipt is a fact about one reader and one message; only its time may be corrected.
    IF (NEW.message_id, NEW.read_by_user_id, NEW.read_by_customer_id, NEW.conversation_id,
        NEW.message_sender_type)
       IS DISTINCT FROM
       (OLD.message_id, OLD.read_by_user_id, OLD.read_by_customer_id, OLD.conversation_id,
        OLD.message_sender_type)
    THEN
        RAISE EXCEPTION 'the message and reader of receipt % cannot change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'message_read_receipts_immutable',
                  SCHEMA = 'public', TABLE = 'message_read_receipts';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER message_read_receipts_before_update
    BEFORE UPDATE ON public.message_read_receipts
    FOR EACH ROW EXECUTE FUNCTION rtm.message_read_receipts_before_update();

-- After each INSERT statement: count the receipts per reader, and record the message as read for
-- each reader in its delivery status (a receipt is the strongest proof of delivery). Both in a
-- fixed key order so that concurrent writers queue rather than deadlock.
CREATE FUNCTION rtm.message_read_receipts_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO rtm.reader_counters AS rc (user_id, receipts)
    SELECT n.read_by_user_id, count(*)
    FROM inserted_receipts AS n
    WHERE n.read_by_user_id IS NOT NULL
    GROUP BY n.read_by_user_id
    ORDER BY n.read_by_user_id
    ON CONFLICT (user_id) DO UPDATE SET receipts = rc.receipts + excluded.receipts;

    INSERT INTO rtm.reader_counters AS rc (customer_id, receipts)
    SELECT n.read_by_customer_id, count(*)
    FROM inserted_receipts AS n
    WHERE n.read_by_customer_id IS NOT NULL
    GROUP BY n.read_by_customer_id
    ORDER BY n.read_by_customer_id
    ON CONFLICT (customer_id) DO UPDATE SET receipts = rc.receipts + excluded.receipts;

    -- Most readers already have a row (written with the message): move it to read. Then insert
    -- the missing ones; ON CONFLICT covers a row written concurrently in between.
    UPDATE public.message_delivery_status AS d
    SET status = 'read'
    FROM inserted_receipts AS n
    WHERE d.message_id = n.message_id
      AND d.recipient_type = CASE WHEN n.read_by_user_id IS NOT NULL THEN 'staff' ELSE 'customer' END
      AND d.recipient_id = coalesce(n.read_by_user_id, n.read_by_customer_id)
      AND d.status <> 'read';

    INSERT INTO public.message_delivery_status AS d
        (message_id, recipient_type, recipient_id, status)
    SELECT n.message_id, n.recipient_type, n.recipient_id, 'read'
    FROM (
        SELECT r.message_id,
               CASE WHEN r.read_by_user_id IS NOT NULL THEN 'staff' ELSE 'customer' END
                   AS recipient_type,
               coalesce(r.read_by_user_id, r.read_by_customer_id) AS recipient_id
        FROM inserted_receipts AS r
    ) AS n
    WHERE NOT EXISTS (
        SELECT 1 FROM public.message_delivery_status AS e
        WHERE e.message_id = n.message_id
          AND e.recipient_type = n.recipient_type
          AND e.recipient_id = n.recipient_id
    )
    ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT message_delivery_status_recipient_key DO UPDATE
        SET status = 'read'
        WHERE d.status <> 'read';

    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_after_insert
    AFTER INSERT ON public.message_read_receipts
    REFERENCING NEW TABLE AS inserted_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_read_receipts_after_insert();

-- Row-level, like the message counter: receipts mostly disappear through cascades (message,
-- conversation, customer or user deleted). The delivery status stays 'read': it never moves back.
CREATE FUNCTION rtm.message_read_receipts_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF OLD.read_by_user_id IS NOT NULL THEN
        UPDATE rtm.reader_counters AS rc SET receipts = rc.receipts - 1
        WHERE rc.user_id = OLD.read_by_user_id;
    ELSE
        UPDATE rtm.reader_counters AS rc SET receipts = rc.receipts - 1
        WHERE rc.customer_id = OLD.read_by_customer_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_after_delete
    AFTER DELETE ON public.message_read_receipts
    FOR EACH ROW EXECUTE FUNCTION rtm.message_read_receipts_after_delete();

CREATE FUNCTION rtm.message_read_receipts_after_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    DELETE FROM rtm.reader_counters;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_after_truncate
    AFTER TRUNCATE ON public.message_read_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_read_receipts_after_truncate();

-- Typing indicators ------------------------------------------------------------------------------

CREATE FUNCTION rtm.message_typing_indicators_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.conversation_id, NEW.user_id, NEW.customer_id)
           IS DISTINCT FROM (OLD.conversation_id, OLD.user_id, OLD.customer_id) THEN
            RAISE EXCEPTION 'the conversation and participant of typing indicator % cannot change',
                    OLD.id
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'message_typing_indicators_immutable',
                      SCHEMA = 'public', TABLE = 'message_typing_indicators';
        END IF;
        RETURN NEW;
    END IF;
    -- A customer types only in their own conversations (any staff user is a participant).
    IF NEW.customer_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.conversations AS c
        WHERE c.id = NEW.conversation_id AND c.customer_id <> NEW.customer_id
    ) THEN
        RAISE EXCEPTION 'customer % is not a participant of conversation %',
                NEW.customer_id, NEW.conversation_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'message_typing_indicators_participant',
                  SCHEMA = 'public', TABLE = 'message_typing_indicators';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER message_typing_indicators_before_write
    BEFORE INSERT OR UPDATE ON public.message_typing_indicators
    FOR EACH ROW EXECUTE FUNCTION rtm.message_typing_indicators_before_write();

-- Delivery status --------------------------------------------------------------------------------
--
-- sent -> delivered -> read, and sent -> failed; a failed message may still be delivered or read
-- (a retry worked, or the recipient saw it anyway). Nothing moves back: delivered and read never
-- become failed or sent, read never becomes delivered. Writing the current status again is a
-- no-op, so acknowledgements may be repeated.

CREATE FUNCTION rtm.delivery_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE status WHEN 'sent' THEN 0 WHEN 'failed' THEN 0 WHEN 'delivered' THEN 1
                       WHEN 'read' THEN 2 END
$$;

-- Timestamps follow the status: each is set the first time its status is reached (read implies
-- delivered), and a failure reason belongs only to a failed row.
CREATE FUNCTION rtm.delivery_timestamps(d public.message_delivery_status)
RETURNS public.message_delivery_status
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF d.status IN ('delivered', 'read') THEN
        d.delivered_at := coalesce(d.delivered_at, now());
    END IF;
    IF d.status = 'read' THEN
        d.read_at := coalesce(d.read_at, now());
    END IF;
    IF d.status IS DISTINCT FROM 'failed' THEN
        d.failed_reason := NULL;
    END IF;
    d.updated_at := now();
    RETURN d;
END
$$;

-- Fills conversation_id, checks the recipient, and applies the receipt rule. SECURITY DEFINER:
-- the caller may not see the users table or other readers' receipts.
CREATE FUNCTION rtm.message_delivery_status_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    msg record;
BEGIN
    SELECT m.conversation_id, m.sender_type, c.customer_id,
           EXISTS (SELECT 1 FROM public.users AS u WHERE u.id = NEW.recipient_id) AS is_user,
           EXISTS (
               SELECT 1 FROM public.message_read_receipts AS r
               WHERE r.message_id = NEW.message_id
                 AND CASE NEW.recipient_type
                         WHEN 'staff' THEN r.read_by_user_id = NEW.recipient_id
                         ELSE r.read_by_customer_id = NEW.recipient_id
                     END
           ) AS has_receipt
    INTO msg
    FROM public.customer_messages AS m
    JOIN public.conversations AS c ON c.id = m.conversation_id
    WHERE m.id = NEW.message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist', NEW.message_id
            USING ERRCODE = 'foreign_key_violation',
                  CONSTRAINT = 'message_delivery_status_message_id_fkey',
                  SCHEMA = 'public', TABLE = 'message_delivery_status';
    END IF;
    NEW.conversation_id := msg.conversation_id;
    -- The recipient is on the other side: the conversation's customer for a staff message, a
    -- staff user for a customer message.
    IF NEW.recipient_type = msg.sender_type
       OR (NEW.recipient_type = 'customer' AND NEW.recipient_id <> msg.customer_id)
       OR (NEW.recipient_type = 'staff' AND NOT msg.is_user) THEN
        RAISE EXCEPTION '% % is not a recipient of message %',
                NEW.recipient_type, NEW.recipient_id, NEW.message_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'message_delivery_status_recipient',
                  SCHEMA = 'public', TABLE = 'message_delivery_status';
    END IF;
    -- A recipient who holds a receipt has read the message, whatever the writer says.
    IF msg.has_receipt THEN
        NEW.status := 'read';
    END IF;
    RETURN rtm.delivery_timestamps(NEW);
END
$$;

CREATE TRIGGER message_delivery_status_before_insert
    BEFORE INSERT ON public.message_delivery_status
    FOR EACH ROW EXECUTE FUNCTION rtm.message_delivery_status_before_insert();

-- The transition rule. Reads no other rows, so it runs as the caller.
CREATE FUNCTION rtm.message_delivery_status_before_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF (NEW.message_id, NEW.recipient_type, NEW.recipient_id, NEW.conversation_id)
       IS DISTINCT FROM
       (OLD.message_id, OLD.recipient_type, OLD.recipient_id, OLD.conversation_id) THEN
        RAISE EXCEPTION 'the message and recipient of delivery status % cannot change', OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'message_delivery_status_immutable',
                  SCHEMA = 'public', TABLE = 'message_delivery_status';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NOT (rtm.delivery_rank(NEW.status) > rtm.delivery_rank(OLD.status)
                OR (OLD.status = 'sent' AND NEW.status = 'failed')) THEN
        RAISE EXCEPTION 'delivery status of message % for % % cannot go from % to %',
                OLD.message_id, OLD.recipient_type, OLD.recipient_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'message_delivery_status_forward_only',
                  SCHEMA = 'public', TABLE = 'message_delivery_status', COLUMN = 'status';
    END IF;
    -- When a status was first reached is history: once set, a timestamp stays.
    NEW.delivered_at := coalesce(OLD.delivered_at, NEW.delivered_at);
    NEW.read_at := coalesce(OLD.read_at, NEW.read_at);
    RETURN rtm.delivery_timestamps(NEW);
END
$$;

CREATE TRIGGER message_delivery_status_before_update
    BEFORE UPDATE ON public.message_delivery_status
    FOR EACH ROW EXECUTE FUNCTION rtm.message_delivery_status_before_update();

-- The documented functions -----------------------------------------------------------------------
--
-- Parameter names are the documented ones (callers may pass them by name, PostgREST style), so the
-- bodies copy them into v_ variables and never mention a bare column name.
-- Each name has exactly one signature, so the documented calls with quoted literals and NULLs
-- resolve without casts.

CREATE FUNCTION public.mark_message_as_read(message_id uuid, user_id uuid, customer_id uuid)
RETURNS public.message_read_receipts
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_message_id  uuid := mark_message_as_read.message_id;
    v_user_id     uuid := mark_message_as_read.user_id;
    v_customer_id uuid := mark_message_as_read.customer_id;
    v_receipt     public.message_read_receipts;
BEGIN
    PERFORM rtm.require_reader(v_user_id, v_customer_id);
    IF v_message_id IS NULL THEN
        RAISE EXCEPTION 'message_id must be given' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Row-level security decides visibility: a message of someone else's conversation is as
    -- unknown as a message that does not exist.
    PERFORM 1 FROM public.customer_messages AS m WHERE m.id = v_message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % not found', v_message_id USING ERRCODE = 'no_data_found';
    END IF;

    -- Idempotent: a second mark finds the first receipt. The delivery status moves to read in the
    -- receipt trigger, so every writer of receipts gets that, not only this function.
    INSERT INTO public.message_read_receipts AS r
        (message_id, read_by_user_id, read_by_customer_id)
    VALUES (v_message_id, v_user_id, v_customer_id)
    ON CONFLICT ON CONSTRAINT unique_message_reader DO NOTHING
    RETURNING r.* INTO v_receipt;
    IF v_receipt.id IS NULL THEN
        SELECT r.* INTO v_receipt
        FROM public.message_read_receipts AS r
        WHERE r.message_id = v_message_id
          AND (r.read_by_user_id = v_user_id OR r.read_by_customer_id = v_customer_id);
    END IF;
    RETURN v_receipt;
END
$$;
COMMENT ON FUNCTION public.mark_message_as_read(uuid, uuid, uuid) IS
    'Record that the reader (user_id or customer_id) read the message; idempotent. '
    'Returns the receipt; the delivery status for that reader becomes read.';

CREATE FUNCTION public.update_typing_indicator(
    conversation_id uuid,
    user_id uuid,
    customer_id uuid,
    is_typing boolean,
    expires_in_seconds integer DEFAULT 5
)
RETURNS public.message_typing_indicators
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_conversation_id uuid    := update_typing_indicator.conversation_id;
    v_user_id         uuid    := update_typing_indicator.user_id;
    v_customer_id     uuid    := update_typing_indicator.customer_id;
    v_is_typing       boolean := update_typing_indicator.is_typing;
    v_seconds         integer := update_typing_indicator.expires_in_seconds;
    v_row             public.message_typing_indicators;
BEGIN
    PERFORM rtm.require_reader(v_user_id, v_customer_id);
    IF v_conversation_id IS NULL THEN
        RAISE EXCEPTION 'conversation_id must be given' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_is_typing IS NULL THEN
        RAISE EXCEPTION 'is_typing must be true or false'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_seconds IS NULL OR v_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'expires_in_seconds must be between 1 and 3600, not %', v_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM public.conversations AS c WHERE c.id = v_conversation_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation % not found', v_conversation_id
            USING ERRCODE = 'no_data_found';
    END IF;

    -- Stopping keeps the row, marked not typing and already expired, instead of deleting it: the
    -- change feed then carries an update with the whole row ("X stopped typing"), where a delete
    -- would carry only the id. The cleanup function removes it later.
    INSERT INTO public.message_typing_indicators AS t
        (conversation_id, user_id, customer_id, is_typing, started_at, expires_at, updated_at)
    VALUES (v_conversation_id, v_user_id, v_customer_id, v_is_typing, now(),
            CASE WHEN v_is_typing THEN now() + make_interval(secs => v_seconds) ELSE now() END,
            now())
    ON CONFLICT ON CONSTRAINT message_typing_indicators_one_per_participant DO UPDATE
        SET is_typing = excluded.is_typing,
            -- Someone who keeps typing keeps the moment they started.
            started_at = CASE
                WHEN NOT excluded.is_typing THEN t.started_at
                WHEN t.is_typing AND t.expires_at > now() THEN t.started_at
                ELSE excluded.started_at
            END,
            expires_at = excluded.expires_at,
            updated_at = excluded.updated_at
    RETURNING t.* INTO v_row;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION public.update_typing_indicator(uuid, uuid, uuid, boolean, integer) IS
    'Start (or keep) typing for expires_in_seconds, or stop (is_typing false: the row stays, '
    'not typing and expired). Returns the indicator row.';

CREATE FUNCTION public.update_user_presence(
    user_id uuid,
    customer_id uuid,
    status text,
    metadata jsonb DEFAULT NULL
)
RETURNS public.user_presence
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_user_id     uuid  := update_user_presence.user_id;
    v_customer_id uuid  := update_user_presence.customer_id;
    v_status      text  := update_user_presence.status;
    v_metadata    jsonb := update_user_presence.metadata;
    v_row         public.user_presence;
BEGIN
    PERFORM rtm.require_reader(v_user_id, v_customer_id);
    IF v_status IS NULL OR v_status NOT IN ('online', 'away', 'offline') THEN
        RAISE EXCEPTION 'status must be online, away or offline, not %', coalesce(v_status, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_metadata IS NOT NULL AND jsonb_typeof(v_metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- NULL metadata keeps what is stored (a new row starts with {}). Arbiters are named by
    -- constraint: "ON CONFLICT (user_id)" would be ambiguous with the parameter user_id.
    IF v_user_id IS NOT NULL THEN
        INSERT INTO public.user_presence AS p (user_id, status, last_seen_at, metadata)
        VALUES (v_user_id, v_status, now(), coalesce(v_metadata, '{}'))
        ON CONFLICT ON CONSTRAINT user_presence_user_id_key DO UPDATE
            SET status = excluded.status,
                last_seen_at = excluded.last_seen_at,
                metadata = coalesce(v_metadata, p.metadata)
        RETURNING p.* INTO v_row;
    ELSE
        INSERT INTO public.user_presence AS p (customer_id, status, last_seen_at, metadata)
        VALUES (v_customer_id, v_status, now(), coalesce(v_metadata, '{}'))
        ON CONFLICT ON CONSTRAINT user_presence_customer_id_key DO UPDATE
            SET status = excluded.status,
                last_seen_at = excluded.last_seen_at,
                metadata = coalesce(v_metadata, p.metadata)
        RETURNING p.* INTO v_row;
    END IF;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION public.update_user_presence(uuid, uuid, text, jsonb) IS
    'Set the presence of a staff user or a customer; last_seen_at becomes now(). '
    'NULL metadata keeps the stored metadata.';

CREATE FUNCTION public.get_unread_message_count(user_id uuid, customer_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_user_id     uuid := get_unread_message_count.user_id;
    v_customer_id uuid := get_unread_message_count.customer_id;
BEGIN
    -- Staff see everything, so they may ask for anyone's count; a customer only for their own.
    PERFORM rtm.require_reader(v_user_id, v_customer_id, p_staff_may_name_others => true);
    -- One statement, one snapshot: the two sums are consistent with each other.
    IF v_user_id IS NOT NULL THEN
        -- Customer messages in all conversations, minus this user's receipts (all of which are on
        -- customer messages).
        RETURN (SELECT coalesce(sum(cc.customer_messages), 0) FROM rtm.conversation_counters AS cc)
             - coalesce((SELECT rc.receipts FROM rtm.reader_counters AS rc
                         WHERE rc.user_id = v_user_id), 0);
    END IF;
    -- Staff messages in the customer's conversations, minus the customer's receipts (all of which
    -- are on staff messages of their own conversations).
    RETURN (SELECT coalesce(sum(cc.staff_messages), 0) FROM rtm.conversation_counters AS cc
            WHERE cc.customer_id = v_customer_id)
         - coalesce((SELECT rc.receipts FROM rtm.reader_counters AS rc
                     WHERE rc.customer_id = v_customer_id), 0);
END
$$;
COMMENT ON FUNCTION public.get_unread_message_count(uuid, uuid) IS
    'Messages from the other side without a receipt from this reader: for a staff user, customer '
    'messages in all conversations; for a customer, staff messages in their conversations.';

CREATE FUNCTION public.cleanup_expired_typing_indicators()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_deleted integer;
BEGIN
    IF current_user = 'anon' THEN
        RAISE EXCEPTION 'an anonymous caller cannot clean up typing indicators'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Row-level security applies: the owner and the service role clean up everything, staff
    -- everything they may delete (all), a customer their own indicators.
    DELETE FROM public.message_typing_indicators AS t WHERE t.expires_at <= now();
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;
COMMENT ON FUNCTION public.cleanup_expired_typing_indicators() IS
    'Delete typing indicators whose expires_at has passed; returns how many.';
