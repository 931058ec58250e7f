-- 0014_message_edits: editing and deleting messages (docs/api.md "Editing and deleting").
--
-- A message keeps its row and its place in history for good: an edit rewrites its content, a
-- delete empties it to a tombstone (content '', attachments [], deleted_at set). Counters,
-- receipts and delivery rows key on the row, so neither changes them, and the change feed
-- carries both as UPDATE events like any other change.
--
-- Who may do what is decided here, by a BEFORE UPDATE trigger, so that every path (the API, a
-- PATCH through /rest/v1, plain SQL as the caller) obeys the same rules:
--   edit:   the sender, within the edit window, of a message not deleted;
--   delete: the sender within the window, or any time a staff user who handles the
--           conversation (assigned to it, or it is unassigned); trusted roles (service_role, the
--           owner) are not limited, but a tombstone stays a tombstone for everyone.

ALTER TABLE public.customer_messages
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN deleted_at timestamptz;

COMMENT ON COLUMN public.customer_messages.edited_at IS
    'When the content was last edited (NULL: never).';
COMMENT ON COLUMN public.customer_messages.deleted_at IS
    'When the message was deleted (a tombstone: content and attachments emptied; NULL: not).';

-- The edit window, one value for the whole database so that every server process and every
-- path enforces the same one; rtm serve writes RTM_EDIT_WINDOW_SECONDS here when it starts.
CREATE TABLE rtm.message_rules (
    id          boolean  PRIMARY KEY DEFAULT true CONSTRAINT message_rules_one_row CHECK (id),
    edit_window interval NOT NULL DEFAULT interval '15 minutes'
                         CONSTRAINT message_rules_edit_window_check
                         CHECK (edit_window >= interval '0')
);
INSERT INTO rtm.message_rules DEFAULT VALUES;
GRANT SELECT ON rtm.message_rules TO anon, authenticated, service_role;

-- Clients may now ask for a delete by setting deleted_at (the trigger sets its value); edited_at
-- stays the database's to set.
GRANT UPDATE (deleted_at) ON public.customer_messages TO authenticated;

-- Customers may write to the rows of their own conversations (the trigger below narrows that to
-- their own messages); staff to any. Before, only staff could update, with no limit at all.
DROP POLICY customer_messages_update ON public.customer_messages;
CREATE POLICY customer_messages_update ON public.customer_messages
    FOR UPDATE TO authenticated
    USING (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    )
    WITH CHECK (
        (SELECT rtm.is_staff())
        OR conversation_id IN (SELECT rtm.customer_conversation_ids())
    );

-- INVOKER: it must know who the caller is (current_user and the claims).
CREATE FUNCTION rtm.customer_messages_edit_rules() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_trusted   boolean := current_user NOT IN ('anon', 'authenticated');
    v_deleting  boolean := OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL;
    v_author    boolean;
    v_in_window boolean;
    v_handles   boolean;
BEGIN
    IF OLD.deleted_at IS NOT NULL THEN
        IF (NEW.content, NEW.attachments, NEW.edited_at, NEW.deleted_at)
           IS DISTINCT FROM (OLD.content, OLD.attachments, OLD.edited_at, OLD.deleted_at) THEN
            RAISE EXCEPTION 'message % was deleted', OLD.id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'customer_messages_deleted',
                      SCHEMA = 'public', TABLE = 'customer_messages';
        END IF;
        RETURN NEW;
    END IF;

    IF NOT v_trusted THEN
        v_author := CASE OLD.sender_type
                        WHEN 'staff' THEN OLD.sender_id = rtm.current_user_id()
                        ELSE OLD.sender_id = rtm.current_customer_id()
                    END;
        v_author := coalesce(v_author, false);
        v_in_window := OLD.created_at > now() - (SELECT r.edit_window FROM rtm.message_rules AS r);
        v_handles := v_deleting AND rtm.is_staff() AND EXISTS (
            SELECT 1 FROM public.conversations AS c
            WHERE c.id = OLD.conversation_id
              AND (c.assigned_user_id IS NULL OR c.assigned_user_id = rtm.current_user_id()));
        IF NOT v_handles THEN
            IF NOT v_author THEN
                IF v_deleting THEN
                    RAISE EXCEPTION 'message % may be deleted only by its sender or by staff '
                                    'handling the conversation', OLD.id
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                RAISE EXCEPTION 'message % may be edited only by its sender', OLD.id
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF NOT coalesce(v_in_window, false) THEN
                RAISE EXCEPTION 'the edit window of message % has closed', OLD.id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'customer_messages_edit_window',
                          SCHEMA = 'public', TABLE = 'customer_messages';
            END IF;
        END IF;
    END IF;

    IF v_deleting THEN
        NEW.content := '';
        NEW.attachments := '[]'::jsonb;
        NEW.deleted_at := now();
        NEW.edited_at := OLD.edited_at;
    ELSIF (NEW.content, NEW.attachments) IS DISTINCT FROM (OLD.content, OLD.attachments) THEN
        NEW.edited_at := now();
    ELSE
        NEW.edited_at := OLD.edited_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER customer_messages_edit_rules
    BEFORE UPDATE ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.customer_messages_edit_rules();

-- The two operations the API calls, run as the caller (INVOKER): row-level security decides what
-- they see, the trigger what they may change; they only turn "no row" into clear errors and make
-- a second delete return the tombstone.

CREATE FUNCTION rtm.edit_message(p_message_id uuid, p_content text)
RETURNS public.customer_messages
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    m public.customer_messages;
BEGIN
    UPDATE public.customer_messages SET content = p_content WHERE id = p_message_id
    RETURNING * INTO m;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % not found', p_message_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN m;
END
$$;

CREATE FUNCTION rtm.delete_message(p_message_id uuid)
RETURNS public.customer_messages
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    m public.customer_messages;
BEGIN
    UPDATE public.customer_messages SET deleted_at = now()
    WHERE id = p_message_id AND deleted_at IS NULL
    RETURNING * INTO m;
    IF NOT FOUND THEN
        SELECT * INTO m FROM public.customer_messages WHERE id = p_message_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'message % not found', p_message_id USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    RETURN m;
END
$$;

-- Functions are executable by PUBLIC by default (0003 revoked that only for the ones then).
REVOKE ALL ON FUNCTION
    rtm.customer_messages_edit_rules(), rtm.edit_message(uuid, text), rtm.delete_message(uuid)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rtm.edit_message(uuid, text), rtm.delete_message(uuid)
    TO authenticated, service_role;
