-- The event log, one row per event, mirrored from cerebelum.events.
--
-- `data` holds the whole event exactly as the worker produced it (envelope included), so
-- `SELECT data FROM events WHERE execution_id = $1 ORDER BY version` is the execution's history
-- as Kafka carried it, ready to fold. The envelope is repeated in typed columns for queries;
-- the ~90 bytes this duplicates buy a mirror that never re-encodes an event on its hot path.
--
-- Hash-partitioned 64 ways on execution_id like the Kafka topics; PostgreSQL requires the
-- partition key in every unique constraint, hence the primary key (execution_id, version),
-- which is also what makes replaying the topic a no-op (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE events (
    execution_id    text        NOT NULL,
    version         integer     NOT NULL,
    type            text        NOT NULL,
    schema          smallint    NOT NULL,
    at              timestamptz NOT NULL,   -- the event's epoch-ms `at`
    data            jsonb       NOT NULL,   -- the whole event as produced
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    PRIMARY KEY (execution_id, version)
) PARTITION BY HASH (execution_id);

DO $$
BEGIN
    FOR p IN 0..63 LOOP
        EXECUTE format(
            'CREATE TABLE events_p%s PARTITION OF events FOR VALUES WITH (MODULUS 64, REMAINDER %s)',
            lpad(p::text, 2, '0'), p
        );
    END LOOP;
END
$$;
