-- When a delivery fails (docs/database.md, "Delivery status"):
--   * its staff recipient is deleted: rows still 'sent' to that user become 'failed' at once;
--   * it stays 'sent' past the server's delivery deadline (RTM_DELIVERY_DEADLINE): the server's
--     maintenance task marks it 'failed' (this index keeps that scan small).
-- A deleted customer takes their conversations, messages and delivery rows with them.

CREATE INDEX message_delivery_status_pending_idx
    ON public.message_delivery_status (updated_at) WHERE status = 'sent';

CREATE FUNCTION rtm.fail_deliveries_of_deleted_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE public.message_delivery_status AS d
    SET status = 'failed', failed_reason = 'recipient deleted'
    WHERE d.recipient_type = 'staff' AND d.recipient_id = OLD.id AND d.status = 'sent';
    RETURN OLD;
END;
$$;

CREATE TRIGGER users_fail_pending_deliveries BEFORE DELETE ON public.users
    FOR EACH ROW EXECUTE FUNCTION rtm.fail_deliveries_of_deleted_user();
