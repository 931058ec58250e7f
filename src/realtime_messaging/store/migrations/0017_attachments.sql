-- 0017_attachments: uploaded files and the messages that carry them (docs/files.md).
--
-- A file is uploaded to a conversation first (a row here, its bytes in the configured store
-- under storage_key, a key the server draws: never a client's filename), then sent with one
-- message, whose attachments array holds {"type": "file", "id": ...} elements. The database
-- makes those elements true whoever writes the message (the API, /rest/v1, plain SQL): each must
-- name a file of the same conversation uploaded by the message's sender and not sent before,
-- and its filename, type and size are copied from here, not taken from the writer.
--
-- Messages may now consist of attachments alone: the API accepts empty content when attachments
-- are present (no SQL rule ever required content; none is added, so a tombstone of 0014 with
-- content '' and attachments '[]' stays valid).

CREATE TABLE rtm.attachments (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL
                                CONSTRAINT attachments_conversation_id_fkey
                                REFERENCES public.conversations (id) ON DELETE CASCADE,
    uploader_type   text        NOT NULL
                                CONSTRAINT attachments_uploader_type_check
                                CHECK (uploader_type IN ('customer', 'staff')),
    uploader_id     uuid        NOT NULL,
    storage_key     text        NOT NULL
                                CONSTRAINT attachments_storage_key_key UNIQUE
                                CONSTRAINT attachments_storage_key_check
                                CHECK (length(storage_key) BETWEEN 1 AND 200),
    filename        text        NOT NULL
                                CONSTRAINT attachments_filename_check
                                CHECK (length(filename) BETWEEN 1 AND 255),
    content_type    text        NOT NULL
                                CONSTRAINT attachments_content_type_check
                                CHECK (length(content_type) BETWEEN 3 AND 255),
    size_bytes      bigint      NOT NULL CONSTRAINT attachments_size_bytes_check
                                CHECK (size_bytes >= 0),
    sha256          text        NOT NULL CONSTRAINT attachments_sha256_check
                                CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- The message that carries the file; NULL until it is sent. A file travels once.
    message_id      uuid        CONSTRAINT attachments_message_id_fkey
                                REFERENCES public.customer_messages (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_conversation_id_idx ON rtm.attachments (conversation_id);
CREATE INDEX attachments_message_id_idx ON rtm.attachments (message_id)
    WHERE message_id IS NOT NULL;
-- Unsent uploads per uploader: the bound on pending files (docs/files.md), and their cleanup.
CREATE INDEX attachments_pending_idx ON rtm.attachments (uploader_type, uploader_id, created_at)
    WHERE message_id IS NULL;
COMMENT ON TABLE rtm.attachments IS
    'Uploaded files: metadata here, bytes in the configured store under storage_key.';

-- Who sees a file: whoever sees its conversation, once it is sent; before, its uploader alone.
-- The server writes these rows itself (after checking the conversation as the caller), so no
-- end-user role may insert or change them.
ALTER TABLE rtm.attachments ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rtm.attachments TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON rtm.attachments TO service_role;
CREATE POLICY service_role_all ON rtm.attachments
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY attachments_select ON rtm.attachments
    FOR SELECT TO authenticated
    USING (
        ((SELECT rtm.is_staff())
            OR conversation_id IN (SELECT rtm.customer_conversation_ids()))
        AND (message_id IS NOT NULL
            OR (uploader_type = 'staff' AND uploader_id = (SELECT rtm.current_user_id()))
            OR (uploader_type = 'customer'
                AND uploader_id = (SELECT rtm.current_customer_id())))
    );

-- The file elements of a message's attachments, made true: each names an unsent upload of the
-- sender in the message's conversation; filename, type and size come from its row. Elements of
-- another shape (free-form attachments of earlier versions) pass unchanged.
CREATE FUNCTION rtm.attachments_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    element jsonb;
    result  jsonb := '[]';
    upload   rtm.attachments;
    ids     uuid[] := '{}';
    old_ids uuid[] := '{}';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg((e ->> 'id')::uuid), '{}') INTO old_ids
        FROM jsonb_array_elements(OLD.attachments) e
        WHERE jsonb_typeof(e) = 'object' AND e ->> 'type' = 'file';
    END IF;
    FOR element IN SELECT value FROM jsonb_array_elements(NEW.attachments) LOOP
        IF jsonb_typeof(element) <> 'object' OR element ->> 'type' IS DISTINCT FROM 'file' THEN
            result := result || jsonb_build_array(element);
            CONTINUE;
        END IF;
        BEGIN
            SELECT * INTO upload FROM rtm.attachments a WHERE a.id = (element ->> 'id')::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            upload := NULL;
        END;
        IF upload.id IS NULL OR upload.conversation_id <> NEW.conversation_id
            OR (TG_OP = 'INSERT' AND (upload.uploader_type <> NEW.sender_type
                                      OR upload.uploader_id <> NEW.sender_id))
            OR (TG_OP = 'UPDATE' AND NOT upload.id = ANY (old_ids)) THEN
            RAISE EXCEPTION 'attachment % is not a file uploaded by the sender to this conversation',
                element ->> 'id' USING ERRCODE = '22023';
        END IF;
        IF upload.id = ANY (ids) THEN
            RAISE EXCEPTION 'attachment % is listed twice', upload.id USING ERRCODE = '22023';
        END IF;
        ids := ids || upload.id;
        result := result || jsonb_build_array(jsonb_build_object(
            'type', 'file', 'id', upload.id, 'filename', upload.filename,
            'contentType', upload.content_type, 'size', upload.size_bytes));
    END LOOP;
    NEW.attachments := result;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION rtm.attachments_check() IS
    'Before a message is written: its file attachments are real uploads of its sender.';

-- After the message exists: claim its files, each once (a file already sent with another
-- message refuses this one; concurrent claims serialise on the row lock).
CREATE FUNCTION rtm.attachments_claim() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted  int;
    claimed int;
BEGIN
    SELECT count(*) INTO wanted FROM jsonb_array_elements(NEW.attachments) e
    WHERE jsonb_typeof(e) = 'object' AND e ->> 'type' = 'file';
    IF wanted = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE rtm.attachments a SET message_id = NEW.id
    WHERE a.id IN (SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(NEW.attachments) e
                   WHERE jsonb_typeof(e) = 'object' AND e ->> 'type' = 'file')
      AND a.message_id IS NULL;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed <> wanted THEN
        RAISE EXCEPTION 'an attachment was already sent with another message'
            USING ERRCODE = '22023';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION rtm.attachments_claim() IS
    'After a message is inserted: its files belong to it (each file is sent once).';

-- Only messages with attachments pay for the triggers. Not an array: the table's own check
-- (customer_messages_attachments_check) refuses it, with its own error.
CREATE TRIGGER attachments_check BEFORE INSERT ON public.customer_messages
    FOR EACH ROW WHEN (jsonb_typeof(NEW.attachments) = 'array' AND NEW.attachments <> '[]'::jsonb)
    EXECUTE FUNCTION rtm.attachments_check();
CREATE TRIGGER attachments_check_update BEFORE UPDATE OF attachments ON public.customer_messages
    FOR EACH ROW WHEN (jsonb_typeof(NEW.attachments) = 'array' AND NEW.attachments <> '[]'::jsonb
                       AND NEW.attachments IS DISTINCT FROM OLD.attachments)
    EXECUTE FUNCTION rtm.attachments_check();
CREATE TRIGGER attachments_claim AFTER INSERT ON public.customer_messages
    FOR EACH ROW WHEN (jsonb_typeof(NEW.attachments) = 'array' AND NEW.attachments <> '[]'::jsonb)
    EXECUTE FUNCTION rtm.attachments_claim();
