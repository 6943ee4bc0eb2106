-- Access tokens are not stored, so a user's tokens_valid_after is what ends them: the API refuses every
-- access token issued (by its whole-second iat) at or before it. Disabling or re-enabling a user and
-- changing their password move it to the moment of the change, so that a token issued before a disable
-- stays dead when the user is enabled again (docs/security.md, J8). The trigger holds the rule for every writer:
-- the API, the CLI and plain SQL.
ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;
UPDATE users SET tokens_valid_after = password_changed_at;
ALTER TABLE users ALTER COLUMN tokens_valid_after SET NOT NULL,
                  ALTER COLUMN tokens_valid_after SET DEFAULT 'epoch';

CREATE FUNCTION iotauth_users_tokens_valid_after() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.disabled IS DISTINCT FROM OLD.disabled OR NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
        -- clock_timestamp, not now(): the transaction may have started long before this change.
        NEW.tokens_valid_after := greatest(OLD.tokens_valid_after, NEW.tokens_valid_after, clock_timestamp());
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_tokens_valid_after BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION iotauth_users_tokens_valid_after();
