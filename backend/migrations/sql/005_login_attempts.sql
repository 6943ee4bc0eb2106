-- The login throttle's failure counters, shared by every API replica (docs/security.md, L3,
-- U2). One row per budget: an account (keyed by a digest of its canonical email), a client address, or
-- a known-good device of one account. A window starts at a budget's first failure and lasts the
-- configured window; the API counts an attempt with one atomic upsert, so that parallel requests on any
-- replica cannot outrun the limit. Rows whose window has ended are pruned by the API.
CREATE TABLE login_attempts (
    budget_key   text        PRIMARY KEY CHECK (length(budget_key) BETWEEN 1 AND 200),
    window_start timestamptz NOT NULL,
    failures     integer     NOT NULL CHECK (failures >= 0)
);

CREATE INDEX login_attempts_window_start ON login_attempts (window_start);
