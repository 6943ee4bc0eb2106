-- iotauth schema, version 6: the subject deny list of short-lived MQTT credentials (docs/security.md,
-- A4). A credential names the subjects it derives from ("app:<id>", "pk:<id>", "user:<uuid>",
-- "provider:<name>"); the broker's plugin checks them against this list, which it holds in memory
-- (loaded at start, kept current by NOTIFY), so a connect costs no query. A credential is dead when one of
-- its subjects was denied at or after the second it was issued. Rows older than the longest credential
-- lifetime (24 h) can be pruned: nothing they could deny is still valid.
CREATE TABLE subject_denials (
    subject    text PRIMARY KEY CHECK (length(subject) BETWEEN 3 AND 200 AND position(':' IN subject) > 1),
    denied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason     text NOT NULL DEFAULT '' CHECK (length(reason) <= 200)
);
CREATE INDEX subject_denials_denied_idx ON subject_denials (denied_at);

CREATE FUNCTION iotauth_notify_denial() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotauth_credentials', jsonb_build_object('table', 'subject_denials', 'op', TG_OP,
        'subject', NEW.subject, 'deniedAt', to_char(NEW.denied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER subject_denials_notify AFTER INSERT OR UPDATE ON subject_denials
    FOR EACH ROW EXECUTE FUNCTION iotauth_notify_denial();

-- iotauth_deny(subject, reason) records or renews a denial; every writer (API, CLI, plain SQL) goes
-- through it or through the triggers below.
CREATE FUNCTION iotauth_deny(subj text, why text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO subject_denials (subject, denied_at, reason) VALUES (subj, clock_timestamp(), why)
    ON CONFLICT (subject) DO UPDATE SET denied_at = excluded.denied_at, reason = excluded.reason;
$$;

-- An application key revoked, expired early, re-scoped or deleted ends what it exchanged.
CREATE FUNCTION iotauth_deny_app_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM iotauth_deny('app:' || OLD.id, 'application key deleted');
    ELSE
        PERFORM iotauth_deny('app:' || NEW.id, 'application key revoked or changed');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER app_keys_deny_upd AFTER UPDATE ON app_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
                    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
                    OR OLD.topics IS DISTINCT FROM NEW.topics
                    OR OLD.rights IS DISTINCT FROM NEW.rights)
    EXECUTE FUNCTION iotauth_deny_app_key();
CREATE TRIGGER app_keys_deny_del AFTER DELETE ON app_keys
    FOR EACH ROW EXECUTE FUNCTION iotauth_deny_app_key();

-- A user disabled, re-roled, given a new password or deleted ends what was issued for them.
CREATE FUNCTION iotauth_deny_user() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM iotauth_deny('user:' || OLD.id, 'user deleted');
    ELSE
        PERFORM iotauth_deny('user:' || NEW.id, 'user disabled, re-roled or password changed');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER users_deny_upd AFTER UPDATE ON users
    FOR EACH ROW WHEN (OLD.disabled IS DISTINCT FROM NEW.disabled
                    OR OLD.role IS DISTINCT FROM NEW.role
                    OR OLD.password_hash IS DISTINCT FROM NEW.password_hash)
    EXECUTE FUNCTION iotauth_deny_user();
CREATE TRIGGER users_deny_del AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION iotauth_deny_user();
