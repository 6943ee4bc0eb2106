-- iotauth schema, version 1: agents and their credentials (read by the Mosquitto plugin), operators,
-- refresh tokens, provisioning keys and the audit trail (written by the REST API).
-- Secrets are never stored: only SHA-256 digests of machine secrets and argon2id hashes of operator passwords.

CREATE TABLE agents (
    uuid            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'decommissioned')),
    target_state    jsonb NOT NULL DEFAULT '{}'::jsonb,
    target_version  bigint NOT NULL DEFAULT 1 CHECK (target_version > 0),
    reported_state  jsonb,
    reported_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_uuid    uuid NOT NULL REFERENCES agents (uuid) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    digest        bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    prefix        text NOT NULL,
    rights        text[] NOT NULL DEFAULT ARRAY['mqtt', 'device_state'],
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_agent_idx ON api_keys (agent_uuid);

CREATE TABLE mqtt_credentials (
    agent_uuid     uuid PRIMARY KEY REFERENCES agents (uuid) ON DELETE CASCADE,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE acl_rules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_uuid  uuid NOT NULL REFERENCES agents (uuid) ON DELETE CASCADE,
    access      text NOT NULL CHECK (access IN ('read', 'write', 'readwrite', 'deny')),
    pattern     text NOT NULL CHECK (length(pattern) BETWEEN 1 AND 1024 AND pattern NOT LIKE '$%'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acl_rules_agent_idx ON acl_rules (agent_uuid);

CREATE TABLE users (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email                text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash        text NOT NULL,
    role                 text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled             boolean NOT NULL DEFAULT false,
    password_changed_at  timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));

CREATE TABLE refresh_tokens (
    jti                uuid PRIMARY KEY,
    family             uuid NOT NULL,
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at         timestamptz NOT NULL,
    family_expires_at  timestamptz NOT NULL,
    used_at            timestamptz,
    revoked_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE provisioning_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    digest      bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    prefix      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL DEFAULT '',
    outcome      text NOT NULL DEFAULT 'success',
    remote_addr  text NOT NULL DEFAULT '',
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_at_idx ON audit_events (at);

-- Every change that can revoke or alter what an agent may do is announced on the iotauth_credentials
-- channel, whoever made it (the API or plain SQL), so that every broker's plugin drops its cached entry
-- and re-checks the agent's live sessions. The payload is JSON: table, op, agent and, for api_keys, the
-- hex digest of the key (a digest, never a secret).
CREATE FUNCTION iotauth_notify_credentials() RETURNS trigger
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
    IF TG_TABLE_NAME = 'api_keys' THEN
        payload := payload || jsonb_build_object('digest', encode(
            CASE WHEN TG_OP = 'DELETE' THEN OLD.digest ELSE NEW.digest END, 'hex'));
    END IF;
    PERFORM pg_notify('iotauth_credentials', payload::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_ins_del AFTER INSERT OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_credentials('agent_uuid');
CREATE TRIGGER api_keys_notify_upd AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
                    OR OLD.digest IS DISTINCT FROM NEW.digest
                    OR OLD.agent_uuid IS DISTINCT FROM NEW.agent_uuid
                    OR OLD.rights IS DISTINCT FROM NEW.rights)
    EXECUTE FUNCTION iotauth_notify_credentials('agent_uuid');
CREATE TRIGGER mqtt_credentials_notify AFTER INSERT OR UPDATE OR DELETE ON mqtt_credentials
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_credentials('agent_uuid');
CREATE TRIGGER acl_rules_notify AFTER INSERT OR UPDATE OR DELETE ON acl_rules
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_credentials('agent_uuid');
CREATE TRIGGER agents_notify_del AFTER DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_credentials('uuid');
CREATE TRIGGER agents_notify_status AFTER UPDATE ON agents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION iotauth_notify_credentials('uuid');
