-- iotauth schema, version 4: application keys, the second kind of principal (docs/app-keys.md). An application
-- key belongs to a service, never to an agent: REST rights fixed at creation, MQTT topics fixed at
-- creation, its own MQTT password. Only digests are stored, as for device keys.

CREATE TABLE app_keys (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    digest              bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    prefix              text NOT NULL,
    rights              text[] NOT NULL DEFAULT '{}' CHECK (rights <@ ARRAY['agents:read', 'agents:write',
                            'keys:write', 'provision:write', 'audit:read', 'license:read', 'publish',
                            'token:exchange']::text[] AND array_position(rights, NULL) IS NULL),
    -- [{"access": "read|write|readwrite", "pattern": "agents/+/telemetry"}, ...]: what its MQTT sessions
    -- may publish, receive and subscribe to. Never a $ topic.
    topics              jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(topics) = 'array' AND jsonb_array_length(topics) <= 100),
    mqtt_password_hash  text NOT NULL CHECK (mqtt_password_hash LIKE 'sha256$%'),
    expires_at          timestamptz,
    revoked_at          timestamptz,
    created_by          uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX app_keys_created_idx ON app_keys (created_at DESC, id);

-- The credential notification now carries the digest of application keys too. For app_keys the "agent"
-- member is the key's own id: the plugin groups a key's sessions (cache invalidation, re-check, kick)
-- under it exactly as it groups an agent's.
CREATE OR REPLACE FUNCTION iotauth_notify_credentials() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec     jsonb;
    payload jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
    END IF;
    payload := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'agent', rec ->> TG_ARGV[0]);
    IF TG_TABLE_NAME IN ('api_keys', 'app_keys') THEN
        payload := payload || jsonb_build_object('digest', encode(
            CASE WHEN TG_OP = 'DELETE' THEN OLD.digest ELSE NEW.digest END, 'hex'));
    END IF;
    PERFORM pg_notify('iotauth_credentials', payload::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER app_keys_notify_ins_del AFTER INSERT OR DELETE ON app_keys
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_credentials('id');
CREATE TRIGGER app_keys_notify_upd AFTER UPDATE ON app_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
                    OR OLD.digest IS DISTINCT FROM NEW.digest
                    OR OLD.topics IS DISTINCT FROM NEW.topics
                    OR OLD.rights IS DISTINCT FROM NEW.rights
                    OR OLD.mqtt_password_hash IS DISTINCT FROM NEW.mqtt_password_hash)
    EXECUTE FUNCTION iotauth_notify_credentials('id');
CREATE TRIGGER app_keys_notify_truncate AFTER TRUNCATE ON app_keys
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_notify_truncate();
