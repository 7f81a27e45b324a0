-- The dead-letter topic (cerebelum.dlq), mirrored so people can list, read and replay what the
-- workers refused (GET /dlq, `cerebelum dlq`). One row per DLQ record; (partition, offset) makes
-- re-reading the topic a no-op. `value` is the refused command's bytes, exactly as sent.
CREATE TABLE dead_letters (
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    at               timestamptz NOT NULL,   -- when the worker dead-lettered it (record time)
    reason           text        NOT NULL,
    execution_id     text,                   -- the command's execution, when it names one
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    key              bytea,
    value            bytea       NOT NULL,
    replayed_at      timestamptz,            -- set by a replay (POST /dlq/{id}/replay)
    replayed_by      text,
    PRIMARY KEY (kafka_partition, kafka_offset)
);

-- GET /dlq: newest first, keyset pages (at, partition, offset), optionally by execution.
CREATE INDEX dead_letters_at ON dead_letters (at DESC, kafka_partition DESC, kafka_offset DESC);
CREATE INDEX dead_letters_execution ON dead_letters (execution_id) WHERE execution_id IS NOT NULL;
