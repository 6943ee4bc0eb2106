-- TRUNCATE fires no row triggers: announce it as a change of every agent, so brokers drop their caches
-- and re-check every live session.
CREATE FUNCTION iotauth_notify_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotauth_credentials', jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'agent', '*')::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_truncate AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_notify_truncate();
CREATE TRIGGER mqtt_credentials_notify_truncate AFTER TRUNCATE ON mqtt_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_notify_truncate();
CREATE TRIGGER acl_rules_notify_truncate AFTER TRUNCATE ON acl_rules
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_notify_truncate();
CREATE TRIGGER agents_notify_truncate AFTER TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION iotauth_notify_truncate();

-- Moving a key or credential to another agent must reach the old agent's sessions too.
CREATE FUNCTION iotauth_notify_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotauth_credentials', jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'agent', OLD.agent_uuid::text)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_moved AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.agent_uuid IS DISTINCT FROM NEW.agent_uuid) EXECUTE FUNCTION iotauth_notify_moved();
CREATE TRIGGER mqtt_credentials_notify_moved AFTER UPDATE ON mqtt_credentials
    FOR EACH ROW WHEN (OLD.agent_uuid IS DISTINCT FROM NEW.agent_uuid) EXECUTE FUNCTION iotauth_notify_moved();
