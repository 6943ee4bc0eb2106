-- Presence (docs/presence.md): the brokers that record sessions, and the sessions they record.
--
-- A broker's row carries its current incarnation (a random id drawn at each start), its last heartbeat
-- (the database's clock) and its own presence timeout: a session is live while it has no end, its
-- broker's row names its incarnation and that broker's heartbeat is younger than its timeout. A broker
-- that starts closes its earlier incarnations' open sessions (reason broker_lost) before it accepts.
CREATE TABLE presence_brokers (
    broker_id    text PRIMARY KEY CHECK (length(broker_id) BETWEEN 1 AND 200),
    incarnation  uuid NOT NULL,
    timeout_ms   integer NOT NULL CHECK (timeout_ms > 0),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per authenticated session. (incarnation, seq) is the broker's own numbering, so that a start
-- and its end, written in different batches, meet on the key. Times come from the broker's clock, the
-- end never before the start.
CREATE TABLE presence_sessions (
    incarnation     uuid NOT NULL,
    seq             bigint NOT NULL,
    broker_id       text NOT NULL,
    principal_kind  text NOT NULL CHECK (principal_kind IN ('agent', 'app', 'token')),
    principal_id    text NOT NULL,
    client_id       text NOT NULL,
    protocol        text NOT NULL,
    remote_address  text NOT NULL DEFAULT '',
    connected_at    timestamptz NOT NULL,
    disconnected_at timestamptz,
    reason          text CHECK (reason IN ('client', 'keepalive', 'kicked_revoked', 'kicked_disabled', 'kicked_expired',
                                           'takeover', 'broker_shutdown', 'broker_lost', 'error')),
    PRIMARY KEY (incarnation, seq),
    CHECK ((disconnected_at IS NULL) = (reason IS NULL)),
    CHECK (disconnected_at IS NULL OR disconnected_at >= connected_at)
);
-- A principal's sessions, newest first (agent pages, the sessions list).
CREATE INDEX presence_sessions_principal_idx ON presence_sessions (principal_kind, principal_id, connected_at DESC);
-- Open sessions by broker (counts, a broker's start closing its earlier incarnations).
CREATE INDEX presence_sessions_open_idx ON presence_sessions (broker_id) WHERE disconnected_at IS NULL;
-- Retention: ended sessions by end.
CREATE INDEX presence_sessions_ended_idx ON presence_sessions (disconnected_at) WHERE disconnected_at IS NOT NULL;
