-- 0013_circuit_transition_ids: a circuit transition is recorded once, however often its write
-- is retried.
--
-- A process writes its breakers' transitions in batches, off the call path, and retries a
-- batch whose write failed or timed out. A time limit can fire after the commit, so the retry
-- used to insert the same rows again. Each transition now carries an id from the moment it
-- happens, and the insert skips ids already in the table. Rows written before this migration,
-- and rows inserted by hand, have none (NULLs never conflict).

ALTER TABLE circuit_transitions ADD COLUMN transition_id uuid;
ALTER TABLE circuit_transitions ADD CONSTRAINT circuit_transitions_transition_id_key UNIQUE (transition_id);

COMMENT ON COLUMN circuit_transitions.transition_id IS
    'The transition''s id, given by the process when it happened: a retried write inserts it once';
