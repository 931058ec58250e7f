-- A typing indicator claims at most 30 seconds ahead, whoever writes it (issue 12).
--
-- update_typing_indicator accepts expires_in_seconds up to 3600, so one call could leave
-- "typing..." showing for an hour. Typing is refreshed every few seconds while someone types
-- (the default expiry is 5 s), so a longer claim is only ever a stuck or hostile one. The bound
-- sits on the table, so the RPC endpoint, the SQL function and plain SQL all meet it; rows
-- written before this migration are left as they are (NOT VALID) and expire by themselves.

ALTER TABLE public.message_typing_indicators
    ADD CONSTRAINT message_typing_indicators_expiry_bounded
    CHECK (expires_at <= updated_at + interval '30 seconds') NOT VALID;
