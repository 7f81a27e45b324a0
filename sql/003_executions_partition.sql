-- Which Kafka partition an execution lives on, hence which worker owns it. The mirror fills it
-- from the execution's events (every event of an execution is on one partition).
-- GET /cluster and `cerebelum cluster` count live executions per partition with it.
--
-- Nullable, no default: adding it is a catalogue change, not a table rewrite.
ALTER TABLE executions ADD COLUMN kafka_partition integer;

-- Only live executions are counted, and in time almost every row is terminal: a partial index
-- stays small. The predicate must match the query's (admin/cluster.py) for the planner to use it.
CREATE INDEX executions_live_partition ON executions (kafka_partition)
    WHERE status NOT IN ('completed', 'failed', 'cancelled');

-- Rows mirrored before this migration: fill the live ones from their latest event (one primary
-- key lookup each). Terminal rows keep NULL until a replay touches them; nothing counts them.
UPDATE executions AS x
SET kafka_partition = e.kafka_partition
FROM events AS e
WHERE e.execution_id = x.execution_id
  AND e.version = x.last_version
  AND x.status NOT IN ('completed', 'failed', 'cancelled');
