-- iotauth schema, version 7: publishable keys (docs/security.md, T4). A publishable key is public by
-- design (it sits in a browser's page): it only starts a token exchange, only from its listed origins,
-- only with its listed identity providers, and never grants more than its own topics. Only digests are
-- stored, as for every other key. Revoking one denies the subject "pk:<id>" in the same transaction, so
-- the short-lived MQTT credentials it led to end (schema 006).
CREATE TABLE publishable_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    digest        bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    prefix        text NOT NULL,
    -- Exact origins (scheme://host[:port]) a browser may call the exchange from.
    origins       text[] NOT NULL CHECK (cardinality(origins) BETWEEN 1 AND 20 AND array_position(origins, NULL) IS NULL),
    -- [{"access": "read|write|readwrite", "pattern": "agents/+/telemetry"}, ...]: the most any credential
    -- exchanged with it may hold.
    topics        jsonb NOT NULL CHECK (jsonb_typeof(topics) = 'array' AND jsonb_array_length(topics) BETWEEN 1 AND 100),
    -- Names of the identity providers (OIDC_PROVIDERS_FILE) whose tokens it may exchange.
    providers     text[] NOT NULL CHECK (cardinality(providers) BETWEEN 1 AND 32 AND array_position(providers, NULL) IS NULL),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX publishable_keys_created_idx ON publishable_keys (created_at DESC, id);
-- The CORS preflight asks "does any active key list this origin?" without a key in hand.
CREATE INDEX publishable_keys_origins_idx ON publishable_keys USING gin (origins) WHERE revoked_at IS NULL;

-- Revoking, re-scoping or deleting a key ends what it led to, whoever writes the change (the API's revoke
-- also denies in its own transaction; a second denial only renews the time).
CREATE FUNCTION iotauth_deny_publishable_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM iotauth_deny('pk:' || OLD.id, 'publishable key deleted');
    ELSE
        PERFORM iotauth_deny('pk:' || NEW.id, 'publishable key revoked or changed');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER publishable_keys_deny_del AFTER DELETE ON publishable_keys
    FOR EACH ROW EXECUTE FUNCTION iotauth_deny_publishable_key();
CREATE TRIGGER publishable_keys_deny_upd AFTER UPDATE ON publishable_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
                    OR OLD.topics IS DISTINCT FROM NEW.topics
                    OR OLD.providers IS DISTINCT FROM NEW.providers
                    OR OLD.origins IS DISTINCT FROM NEW.origins)
    EXECUTE FUNCTION iotauth_deny_publishable_key();
