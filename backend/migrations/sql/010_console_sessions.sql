-- Operator console sessions (docs/console.md). The browser holds only a random session id; the row is
-- keyed by its SHA-256 digest, so a copy of this table signs nobody in. A session ends when its row is
-- gone: at sign-out, past its idle or absolute lifetime, and, through the triggers below, whenever its
-- user is disabled, changes password or role, or its refresh family is revoked. Every console request
-- reads the row, so an ended session is refused at once on every replica, whoever wrote the change (the
-- API, the console, the CLI or plain SQL).
CREATE TABLE console_sessions (
    digest        bytea PRIMARY KEY CHECK (length(digest) = 32),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family        uuid NOT NULL,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id);
CREATE INDEX console_sessions_family_idx ON console_sessions (family);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

CREATE FUNCTION iotauth_users_end_console_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM console_sessions WHERE user_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_end_console_sessions AFTER UPDATE ON users
    FOR EACH ROW
    WHEN (NEW.disabled IS DISTINCT FROM OLD.disabled
       OR NEW.password_hash IS DISTINCT FROM OLD.password_hash
       OR NEW.role IS DISTINCT FROM OLD.role
       OR NEW.email IS DISTINCT FROM OLD.email
       OR NEW.tokens_valid_after IS DISTINCT FROM OLD.tokens_valid_after)
    EXECUTE FUNCTION iotauth_users_end_console_sessions();

CREATE FUNCTION iotauth_refresh_end_console_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM console_sessions WHERE family = NEW.family;
    RETURN NULL;
END;
$$;

CREATE TRIGGER refresh_tokens_end_console_sessions AFTER UPDATE OF revoked_at ON refresh_tokens
    FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION iotauth_refresh_end_console_sessions();

-- TRUNCATE fires no row triggers: emptying refresh_tokens ends every console session too.
CREATE FUNCTION iotauth_refresh_truncate_console_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM console_sessions;
    RETURN NULL;
END;
$$;

CREATE TRIGGER refresh_tokens_truncate_console_sessions AFTER TRUNCATE ON refresh_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_refresh_truncate_console_sessions();
