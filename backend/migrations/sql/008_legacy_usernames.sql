-- iotauth schema, version 8: imported fleets (docs/import.md). A device imported from a Mosquitto password_file
-- or mosquitto-go-auth keeps connecting with its existing username and password: its agent gets a
-- "legacy username" row in api_keys (digest = SHA-256 of the username, right mqtt only), so that the
-- plugin's lookup, cache, re-check, revocation and kick paths serve it exactly like a device key.
-- legacy_username is the device's name (not a secret); legacy_client_id is the exact client id it must
-- use (NULL: any client id but an agent's); legacy_hash is the hash as imported, so that a re-import of
-- the same file leaves alone the fast hash the plugin recorded at the first connect.
ALTER TABLE api_keys
    ADD COLUMN legacy_username  text UNIQUE CHECK (legacy_username IS NULL OR
        (octet_length(legacy_username) BETWEEN 1 AND 256 AND legacy_username !~ '[+#/%[:cntrl:]]')),
    ADD COLUMN legacy_client_id text CHECK (legacy_client_id IS NULL OR
        (legacy_username IS NOT NULL AND octet_length(legacy_client_id) BETWEEN 1 AND 256 AND legacy_client_id !~ '[+#/]')),
    ADD COLUMN legacy_hash      text CHECK (legacy_hash IS NULL OR legacy_username IS NOT NULL);

-- Brokers keep the set of live legacy usernames in memory (an unknown username must cost no query):
-- announce every change to it on the credential channel, with live = whether the name now admits.
-- The ordinary api_keys triggers still fire too; the plugin handles the duplicate as any other.
CREATE FUNCTION iotauth_notify_legacy() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The old name is announced gone only when it is (a delete, a new digest, no longer legacy), so that
    -- an update of a live name never leaves a moment where a broker does not know it.
    IF OLD.legacy_username IS NOT NULL AND (TG_OP = 'DELETE' OR NEW.legacy_username IS NULL OR OLD.digest IS DISTINCT FROM NEW.digest) THEN
        PERFORM pg_notify('iotauth_credentials', jsonb_build_object('table', 'legacy_usernames', 'op', TG_OP,
            'agent', OLD.agent_uuid::text, 'digest', encode(OLD.digest, 'hex'), 'live', false)::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.legacy_username IS NOT NULL THEN
        PERFORM pg_notify('iotauth_credentials', jsonb_build_object('table', 'legacy_usernames', 'op', TG_OP,
            'agent', NEW.agent_uuid::text, 'digest', encode(NEW.digest, 'hex'), 'live', NEW.revoked_at IS NULL)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_legacy_ins AFTER INSERT ON api_keys
    FOR EACH ROW WHEN (NEW.legacy_username IS NOT NULL) EXECUTE FUNCTION iotauth_notify_legacy();
CREATE TRIGGER api_keys_notify_legacy_del AFTER DELETE ON api_keys
    FOR EACH ROW WHEN (OLD.legacy_username IS NOT NULL) EXECUTE FUNCTION iotauth_notify_legacy();
CREATE TRIGGER api_keys_notify_legacy_upd AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.legacy_username IS DISTINCT FROM NEW.legacy_username
                    OR (NEW.legacy_username IS NOT NULL AND (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                        OR OLD.digest IS DISTINCT FROM NEW.digest
                        OR OLD.legacy_client_id IS DISTINCT FROM NEW.legacy_client_id)))
    EXECUTE FUNCTION iotauth_notify_legacy();
