-- Events the mirror could not write because PostgreSQL refused them for good (a CHECK or a
-- trigger, a value out of range, ...): each is set aside here, once, and the mirror goes on with
-- the rest instead of retrying one bad row forever (issue 8, item 5). Nothing here is lost from
-- Kafka: `event` is the record as the mirror decoded it, and (kafka_partition, kafka_offset)
-- finds it on cerebelum.events. Once the cause is mended, replaying those offsets writes them.
--
-- `event` is text, not jsonb: what PostgreSQL refused may be the jsonb itself.
-- `sqlstate` is NULL when the driver refused the value before the server saw it.
-- The primary key makes recording idempotent: a replayed batch records nothing twice.
CREATE TABLE mirror_rejects (
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    execution_id    text        NOT NULL,
    version         integer     NOT NULL,
    event           text        NOT NULL,
    sqlstate        text,
    message         text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_partition, kafka_offset)
);

-- "Why is this execution's history short?": its rejects, by id.
CREATE INDEX mirror_rejects_execution ON mirror_rejects (execution_id, version);
