-- 0022_customer_staff_presence: a customer may follow the presence of the staff of their
-- conversations live, as row security lets them read it (docs/changes.md "Who sees what").
--
-- The staff a customer may see are the ones assigned to one of their conversations or who wrote
-- in one. Row security asks it for the calling customer (rtm.customer_staff_ids, 0002); the
-- server asks it for a customer it names when that customer's channel joins with a binding on
-- the staff's presence rows. One definition serves both.

CREATE FUNCTION rtm.staff_of_customer(p_customer_id uuid) RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT c.assigned_user_id
        FROM public.conversations AS c
        WHERE c.customer_id = p_customer_id AND c.assigned_user_id IS NOT NULL
        UNION
        SELECT m.sender_id
        FROM public.conversations AS c
        JOIN public.customer_messages AS m ON m.conversation_id = c.id
        WHERE c.customer_id = p_customer_id AND m.sender_type = 'staff';
END
$$;

-- Only the server (the owner) names a customer; clients ask for themselves through the rules.
REVOKE ALL ON FUNCTION rtm.staff_of_customer(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION rtm.customer_staff_ids() RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT rtm.staff_of_customer(rtm.current_customer_id());
END
$$;

-- A resuming customer channel reads the presence changes of the staff it follows: staff rows
-- carry no customer (0013), so the log's customer index does not find them.
CREATE INDEX change_log_staff_presence_idx
    ON rtm.change_log ((coalesce(record, old_record) ->> 'user_id'), pos)
    WHERE table_name = 'user_presence' AND customer_id IS NULL;
