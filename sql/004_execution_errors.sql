-- One shape for an execution's error (issue 8, item 11), for rows mirrored before it:
--   * a completed execution has no error (an earlier failed attempt's error used to stay);
--   * a cancelled execution's error is {"type": "Cancelled", "message": <reason>}, as the core's
--     `events.cancelled_error` builds it (the mirror used to store the bare reason, a string).
-- The mirror writes both shapes itself from now on; this only mends what it wrote before.
UPDATE executions SET error = NULL
WHERE status = 'completed' AND error IS NOT NULL;

UPDATE executions
SET error = jsonb_build_object('type', 'Cancelled', 'message', error #>> '{}')
WHERE status = 'cancelled' AND jsonb_typeof(error) = 'string';
