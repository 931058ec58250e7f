-- A message's created_at is taken under its conversation's lock: history follows commit order.
--
-- The change feed delivers a conversation's messages in commit order, which the conversation's
-- row lock serialises (rtm.lock_conversation, 0004); history and its cursors order them by
-- (created_at, id). created_at defaulted to clock_timestamp() when the row was formed, before
-- that lock, so a writer held up in between committed after one that came later with the
-- earlier time (30 racing writers: 303 of 3,000 messages out of place in history, up to 38 ms
-- back), and a client that reloaded saw its conversation reshuffled.
--
-- So the time is set after the lock (BEFORE triggers run in name order: zz_lock_conversation,
-- then zz_order_message): now, or just after the conversation's latest message when that is
-- later (a clock that stepped back). created_at thus strictly increases in commit order within a
-- conversation; a time given by the writer is not taken, and the update rule of 0002 keeps it
-- (customer_messages_immutable). The latest message is one backward probe of
-- customer_messages_history_idx; it sees writers that held the lock before (committed) and rows
-- this statement inserted before (so a many-row insert is ordered too).

CREATE FUNCTION rtm.order_message() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.created_at := greatest(
        clock_timestamp(),
        (SELECT m.created_at + interval '1 microsecond'
         FROM public.customer_messages AS m
         WHERE m.conversation_id = NEW.conversation_id
         ORDER BY m.created_at DESC
         LIMIT 1));
    RETURN NEW;
END;
$$;

CREATE TRIGGER zz_order_message BEFORE INSERT ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION rtm.order_message();
