-- 0003_security: Supabase-style roles, privileges and row-level security.
--
-- The server runs each request as its caller: SET ROLE anon | authenticated | service_role plus
-- the verified claims in request.jwt.claims (realtime_messaging.store.caller.as_caller). Row
-- rules read the claims through the rtm.* helpers, wrapped as "(SELECT rtm.is_staff())" so that
-- PostgreSQL evaluates them once per query (an initplan), not once per row.
--
-- RLS is ENABLEd, not FORCEd: the owner (the migrating role) and superusers are not subject to it,
-- which is what migrations, the SECURITY DEFINER triggers and the server's trusted code rely on.
--
-- Who sees what (docs/database.md has the full table):
--   anon           nothing: no table privileges at all.
--   staff          every row; writes only as themselves (their messages, receipts, typing,
--                  presence, delivery acknowledgements), plus managing conversations and messages.
--   customer       their own customer row and conversations and everything in them (messages,
--                  receipts, typing, delivery status), their own presence and the presence and
--                  names of staff who take part in their conversations.
--   service_role   everything (BYPASSRLS, and explicit policies in case the role exists without it).

-- Roles ------------------------------------------------------------------------------------------
-- Roles belong to the whole server, not to this database: create them only if missing, and accept
-- losing the race to a migration of another database on the same server.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES ('anon', ''), ('authenticated', ''), ('service_role', ' BYPASSRLS'))
            AS v (name, extra)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT%s', r.name, r.extra);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        -- The migrating role must be able to SET ROLE to each (a superuser already can).
        -- PostgreSQL 16 separates membership from the SET option, hence the two spellings.
        IF current_setting('server_version_num')::integer >= 160000 THEN
            IF NOT pg_catalog.pg_has_role(current_user, r.name, 'SET') THEN
                EXECUTE format('GRANT %I TO %I WITH SET TRUE', r.name, current_user);
            END IF;
        ELSIF NOT pg_catalog.pg_has_role(current_user, r.name, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r.name, current_user);
        END IF;
    END LOOP;
END
$$;

-- Privileges -------------------------------------------------------------------------------------
-- Functions are executable by PUBLIC by default; these are not.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rtm FROM PUBLIC;
REVOKE ALL ON FUNCTION
    public.mark_message_as_read(uuid, uuid, uuid),
    public.update_typing_indicator(uuid, uuid, uuid, boolean, integer),
    public.update_user_presence(uuid, uuid, text, jsonb),
    public.get_unread_message_count(uuid, uuid),
    public.cleanup_expired_typing_indicators()
FROM PUBLIC;

GRANT USAGE ON SCHEMA public, rtm TO anon, authenticated, service_role;

-- The documented functions check their caller themselves (anon gets a clear 42501 rather than
-- "permission denied for function").
GRANT EXECUTE ON FUNCTION
    public.mark_message_as_read(uuid, uuid, uuid),
    public.update_typing_indicator(uuid, uuid, uuid, boolean, integer),
    public.update_user_presence(uuid, uuid, text, jsonb),
    public.get_unread_message_count(uuid, uuid),
    public.cleanup_expired_typing_indicators()
TO anon, authenticated, service_role;

-- What the row rules and the documented functions call as the caller.
GRANT EXECUTE ON FUNCTION
    rtm.claims(),
    rtm.uuid_or_null(text),
    rtm.current_user_id(),
    rtm.current_customer_id(),
    rtm.is_staff(),
    rtm.is_service(),
    rtm.customer_conversation_ids(),
    rtm.customer_staff_ids(),
    rtm.require_reader(uuid, uuid, boolean),
    rtm.delivery_rank(text),
    rtm.delivery_timestamps(public.message_delivery_status)
TO anon, authenticated, service_role;

-- authenticated: reads everything its row rules allow; writes only the columns a client may set
-- (times, counters and copied columns are the database's to set).
GRANT SELECT ON
    public.customers, public.users, public.conversations, public.customer_messages,
    public.message_read_receipts, public.message_typing_indicators, public.user_presence,
    public.message_delivery_status, rtm.conversation_counters, rtm.reader_counters
TO authenticated;
GRANT INSERT (id, customer_id, subject, status, assigned_user_id),
      UPDATE (subject, status, assigned_user_id),
      DELETE
    ON public.conversations TO authenticated;
GRANT INSERT (id, conversation_id, sender_type, sender_id, content, attachments,
              client_message_id),
      UPDATE (content, attachments),
      DELETE
    ON public.customer_messages TO authenticated;
GRANT INSERT (id, message_id, read_by_user_id, read_by_customer_id)
    ON public.message_read_receipts TO authenticated;
GRANT INSERT, UPDATE, DELETE ON public.message_typing_indicators, public.user_presence
    TO authenticated;
GRANT INSERT (id, message_id, recipient_type, recipient_id, status, failed_reason),
      UPDATE (status, failed_reason)
    ON public.message_delivery_status TO authenticated;

-- service_role: the trusted back end (admin endpoints, portal tokens). Counters stay read-only:
-- only the triggers write them.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.customers, public.users, public.conversations, public.customer_messages,
    public.message_read_receipts, public.message_typing_indicators, public.user_presence,
    public.message_delivery_status, public.portal_tokens
TO service_role;
GRANT SELECT ON rtm.conversation_counters, rtm.reader_counters TO service_role;

-- Row-level security -----------------------------------------------------------------------------

ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.customer_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.message_read_receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.message_typing_indicators ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_presence ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.message_delivery_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.portal_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE rtm.conversation_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE rtm.reader_counters ENABLE ROW LEVEL SECURITY;

-- The service role sees and writes everything, even where the role was created without BYPASSRLS.
CREATE POLICY service_role_all ON public.customers
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.users
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.conversations
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.customer_messages
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.message_read_receipts
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.message_typing_indicators
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.user_presence
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.message_delivery_status
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON public.portal_tokens
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON rtm.conversation_counters
    FOR SELECT TO service_role USING (true);
CREATE POLICY service_role_all ON rtm.reader_counters
    FOR SELECT TO service_role USING (true);

-- portal_tokens: no policy for anon or authenticated. Only the service role and the owner read
-- token hashes.

-- customers: staff see all; a customer sees their own row.
CREATE POLICY customers_select ON public.customers
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()) OR id = (SELECT rtm.current_customer_id()));

-- users: staff see all; a customer sees the staff who take part in their conversations.
CREATE POLICY users_select ON public.users
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()) OR id IN (SELECT rtm.customer_staff_ids()));

-- conversations: staff manage all; a customer sees and opens their own (unassigned), and may
-- change subject and status of their own (the trigger stops them assigning it).
CREATE POLICY conversations_select ON public.conversations
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()));
CREATE POLICY conversations_insert ON public.conversations
    FOR INSERT TO authenticated
    WITH CHECK (
        (SELECT rtm.is_staff())
        OR (customer_id = (SELECT rtm.current_customer_id()) AND assigned_user_id IS NULL)
    );
CREATE POLICY conversations_update ON public.conversations
    FOR UPDATE TO authenticated
    USING ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()))
    WITH CHECK ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()));
CREATE POLICY conversations_delete ON public.conversations
    FOR DELETE TO authenticated
    USING ((SELECT rtm.is_staff()));

-- customer_messages: visible by conversation; each side writes as itself; staff moderate.
CREATE POLICY customer_messages_select ON public.customer_messages
    FOR SELECT TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    );
CREATE POLICY customer_messages_insert ON public.customer_messages
    FOR INSERT TO authenticated
    WITH CHECK (
        ((SELECT rtm.is_staff())
            AND sender_type = 'staff' AND sender_id = (SELECT rtm.current_user_id()))
        OR (sender_type = 'customer' AND sender_id = (SELECT rtm.current_customer_id())
            AND conversation_id IN (SELECT rtm.customer_conversation_ids()))
    );
CREATE POLICY customer_messages_update ON public.customer_messages
    FOR UPDATE TO authenticated
    USING ((SELECT rtm.is_staff()))
    WITH CHECK ((SELECT rtm.is_staff()));
CREATE POLICY customer_messages_delete ON public.customer_messages
    FOR DELETE TO authenticated
    USING ((SELECT rtm.is_staff()));

-- message_read_receipts: isolated by conversation; a reader records only their own reads.
CREATE POLICY message_read_receipts_select ON public.message_read_receipts
    FOR SELECT TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    );
CREATE POLICY message_read_receipts_insert ON public.message_read_receipts
    FOR INSERT TO authenticated
    WITH CHECK (
        ((SELECT rtm.is_staff()) AND read_by_user_id = (SELECT rtm.current_user_id()))
        OR (read_by_customer_id = (SELECT rtm.current_customer_id())
            AND conversation_id IN (SELECT rtm.customer_conversation_ids()))
    );

-- message_typing_indicators: isolated by conversation; a participant writes only their own row.
-- Staff may delete any (expired indicators, through cleanup_expired_typing_indicators()).
CREATE POLICY message_typing_indicators_select ON public.message_typing_indicators
    FOR SELECT TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    );
CREATE POLICY message_typing_indicators_insert ON public.message_typing_indicators
    FOR INSERT TO authenticated
    WITH CHECK (
        ((SELECT rtm.is_staff()) AND user_id = (SELECT rtm.current_user_id()))
        OR (customer_id = (SELECT rtm.current_customer_id())
            AND conversation_id IN (SELECT rtm.customer_conversation_ids()))
    );
CREATE POLICY message_typing_indicators_update ON public.message_typing_indicators
    FOR UPDATE TO authenticated
    USING (
        ((SELECT rtm.is_staff()) AND user_id = (SELECT rtm.current_user_id()))
        OR customer_id = (SELECT rtm.current_customer_id())
    )
    WITH CHECK (
        ((SELECT rtm.is_staff()) AND user_id = (SELECT rtm.current_user_id()))
        OR (customer_id = (SELECT rtm.current_customer_id())
            AND conversation_id IN (SELECT rtm.customer_conversation_ids()))
    );
CREATE POLICY message_typing_indicators_delete ON public.message_typing_indicators
    FOR DELETE TO authenticated
    USING ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()));

-- user_presence: staff see all; a customer sees their own row and the staff of their
-- conversations, never other customers. Everyone writes only their own row.
CREATE POLICY user_presence_select ON public.user_presence
    FOR SELECT TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR customer_id = (SELECT rtm.current_customer_id())
        OR user_id IN (SELECT rtm.customer_staff_ids())
    );
CREATE POLICY user_presence_write ON public.user_presence
    FOR ALL TO authenticated
    USING (
        ((SELECT rtm.is_staff()) AND user_id = (SELECT rtm.current_user_id()))
        OR customer_id = (SELECT rtm.current_customer_id())
    )
    WITH CHECK (
        ((SELECT rtm.is_staff()) AND user_id = (SELECT rtm.current_user_id()))
        OR customer_id = (SELECT rtm.current_customer_id())
    );

-- message_delivery_status: visible by conversation; a recipient acknowledges only their own rows
-- (the trigger keeps every change moving forward).
CREATE POLICY message_delivery_status_select ON public.message_delivery_status
    FOR SELECT TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    );
CREATE POLICY message_delivery_status_insert ON public.message_delivery_status
    FOR INSERT TO authenticated
    WITH CHECK (
        ((SELECT rtm.is_staff())
            AND recipient_type = 'staff' AND recipient_id = (SELECT rtm.current_user_id()))
        OR (recipient_type = 'customer' AND recipient_id = (SELECT rtm.current_customer_id())
            AND conversation_id IN (SELECT rtm.customer_conversation_ids()))
    );
CREATE POLICY message_delivery_status_update ON public.message_delivery_status
    FOR UPDATE TO authenticated
    USING (
        ((SELECT rtm.is_staff())
            AND recipient_type = 'staff' AND recipient_id = (SELECT rtm.current_user_id()))
        OR (recipient_type = 'customer' AND recipient_id = (SELECT rtm.current_customer_id()))
    )
    WITH CHECK (
        ((SELECT rtm.is_staff())
            AND recipient_type = 'staff' AND recipient_id = (SELECT rtm.current_user_id()))
        OR (recipient_type = 'customer' AND recipient_id = (SELECT rtm.current_customer_id()))
    );

-- Unread counters: staff see all; a customer their own.
CREATE POLICY conversation_counters_select ON rtm.conversation_counters
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()));
CREATE POLICY reader_counters_select ON rtm.reader_counters
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()) OR customer_id = (SELECT rtm.current_customer_id()));
