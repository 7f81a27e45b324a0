-- One row per execution: the fold of its events, kept current by the mirror.
--
-- The mirror upserts with `WHERE executions.last_version < EXCLUDED.last_version`, so a row
-- never goes backwards, and keeps columns a batch does not set with COALESCE.
-- status is free text: running | completed | failed | cancelled | waiting | sleeping | ...
CREATE TABLE executions (
    execution_id     text PRIMARY KEY,
    workflow         text,
    workflow_version text,
    status           text,
    current_step     text,
    inputs           jsonb,
    output           jsonb,
    error            jsonb,
    started_at       timestamptz,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    last_version     integer     NOT NULL
-- Every batch rewrites its executions' rows: free room on each page lets those updates stay
-- on the page (HOT) when no indexed column changes.
) WITH (fillfactor = 80);

-- GET /executions lists newest first (ORDER BY started_at DESC NULLS LAST), unfiltered,
-- by ?status=..., or by ?workflow=...[&status=...].
CREATE INDEX executions_started ON executions (started_at DESC NULLS LAST);
CREATE INDEX executions_status_started ON executions (status, started_at DESC NULLS LAST);
CREATE INDEX executions_workflow_started ON executions (workflow, started_at DESC NULLS LAST);
