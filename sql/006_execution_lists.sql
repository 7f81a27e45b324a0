-- GET /executions pages through any number of executions by keyset (cerebelum/api/listing.py):
-- newest first by start or by last update, ties broken by execution_id, each page one range
-- scan of one of these indexes whatever its depth. The sort keys are spelled as the queries
-- spell them (an execution without a start time sorts as the oldest).
CREATE INDEX executions_started_keyset
    ON executions ((coalesce(started_at, '-infinity'::timestamptz)) DESC, execution_id DESC);
CREATE INDEX executions_updated_keyset ON executions (updated_at DESC, execution_id DESC);
CREATE INDEX executions_workflow_keyset
    ON executions (workflow, (coalesce(started_at, '-infinity'::timestamptz)) DESC, execution_id DESC);
CREATE INDEX executions_status_keyset
    ON executions (status, (coalesce(started_at, '-infinity'::timestamptz)) DESC, execution_id DESC);

-- ?input.customer=c-42 and ?output.x=y: containment (@>) of the filter's document.
-- jsonb_path_ops indexes every path to a value: smaller and faster for @> than the default ops.
CREATE INDEX executions_inputs ON executions USING gin (inputs jsonb_path_ops);
CREATE INDEX executions_output ON executions USING gin (output jsonb_path_ops);

-- The lists before this migration ordered by started_at alone; these served them and nothing
-- reads them now (each costs every mirrored update an index entry).
DROP INDEX IF EXISTS executions_started;
DROP INDEX IF EXISTS executions_status_started;
DROP INDEX IF EXISTS executions_workflow_started;
