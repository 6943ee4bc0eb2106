-- Indexes for the audit trail's filters (GET /api/v1/audit?actor=&action=&agent=, iotauth audit tail).
-- Each filter is an equality on one column, read newest first by id: (column, id) serves the filter and
-- the order at once. The agent filter matches the target or the actor ("agent:<uuid>"), a BitmapOr of
-- the target and actor indexes. The time filters use audit_events_at_idx from migration 001.
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor, id);
CREATE INDEX audit_events_target_idx ON audit_events (target, id);
