-- A staff user's unread count per conversation without the anti-join (issue 16).
--
-- GET /api/unread lists, per conversation, the customer messages a reader has not read. For a
-- customer that anti-join only touches their own conversations; for a staff user it touched every
-- customer message there is (about 150 ms at a million messages). This counter makes the staff
-- answer a walk over rtm.conversation_counters (one row per conversation) joined to this
-- user's rows here:
--   unread(staff user u, conversation k) = customer_messages(k) - receipts(u, k)
-- which equals the anti-join for the same reasons as the totals of 0001 (every staff receipt is
-- on an existing customer message, unique per reader, and its conversation_id is copied from the
-- message and never changes).
--
-- Kept exact by triggers beside the existing receipt counters: inserts per statement from the
-- transition table, in key order (concurrent writers queue rather than deadlock); deletes per
-- row (cascades from a deleted message, conversation or user delete through row triggers);
-- TRUNCATE starts again from nothing.

-- No receipt may be written or deleted while the triggers are created and the counters filled:
-- the backfill below then sees exactly the receipts the triggers will not.
LOCK TABLE public.message_read_receipts IN SHARE ROW EXCLUSIVE MODE;

-- One row per (staff user, conversation) in which the user has ever read a message.
CREATE TABLE rtm.staff_read_counters (
    user_id         uuid   NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    conversation_id uuid   NOT NULL REFERENCES public.conversations (id) ON DELETE CASCADE,
    receipts        bigint NOT NULL DEFAULT 0 CHECK (receipts >= 0),
    PRIMARY KEY (user_id, conversation_id)
);
-- The cascade from a deleted conversation.
CREATE INDEX staff_read_counters_conversation_id_idx
    ON rtm.staff_read_counters (conversation_id);

CREATE FUNCTION rtm.message_read_receipts_count_staff_reads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO rtm.staff_read_counters AS s (user_id, conversation_id, receipts)
    SELECT n.read_by_user_id, n.conversation_id, count(*)
    FROM inserted_receipts AS n
    WHERE n.read_by_user_id IS NOT NULL
    GROUP BY n.read_by_user_id, n.conversation_id
    ORDER BY n.read_by_user_id, n.conversation_id
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET receipts = s.receipts + excluded.receipts;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_count_staff_reads
    AFTER INSERT ON public.message_read_receipts
    REFERENCING NEW TABLE AS inserted_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_read_receipts_count_staff_reads();

CREATE FUNCTION rtm.message_read_receipts_uncount_staff_read() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- The row may already be gone with its conversation or user (same cascade): then no-op.
    UPDATE rtm.staff_read_counters AS s SET receipts = s.receipts - 1
    WHERE s.user_id = OLD.read_by_user_id AND s.conversation_id = OLD.conversation_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_uncount_staff_read
    AFTER DELETE ON public.message_read_receipts
    FOR EACH ROW WHEN (OLD.read_by_user_id IS NOT NULL)
    EXECUTE FUNCTION rtm.message_read_receipts_uncount_staff_read();

CREATE FUNCTION rtm.message_read_receipts_reset_staff_reads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    DELETE FROM rtm.staff_read_counters;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_read_receipts_reset_staff_reads
    AFTER TRUNCATE ON public.message_read_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION rtm.message_read_receipts_reset_staff_reads();

-- The receipts written before this migration.
INSERT INTO rtm.staff_read_counters (user_id, conversation_id, receipts)
SELECT r.read_by_user_id, r.conversation_id, count(*)
FROM public.message_read_receipts AS r
WHERE r.read_by_user_id IS NOT NULL
GROUP BY r.read_by_user_id, r.conversation_id;

-- Read like the other counters: staff see all, customers nothing (they have no rows here), the
-- service role all; only the triggers write.
REVOKE ALL ON FUNCTION rtm.message_read_receipts_count_staff_reads(),
    rtm.message_read_receipts_uncount_staff_read(),
    rtm.message_read_receipts_reset_staff_reads()
FROM PUBLIC;
GRANT SELECT ON rtm.staff_read_counters TO authenticated, service_role;
ALTER TABLE rtm.staff_read_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON rtm.staff_read_counters
    FOR SELECT TO service_role USING (true);
CREATE POLICY staff_read_counters_select ON rtm.staff_read_counters
    FOR SELECT TO authenticated
    USING ((SELECT rtm.is_staff()));
