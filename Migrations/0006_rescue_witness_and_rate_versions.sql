-- Heartbeat continuity: evidence that the database was reachable before anyone is judged dead.
--
-- A worker whose heartbeat is older than the timeout (2 minutes) has its rows rescued and
-- sent again. After Postgres was down or unreachable for longer than that, every heartbeat is
-- stale at once, yet the workers are alive and hold messages they already sent: a rescue run
-- before they beat again would send those messages twice. So a rescue needs a witness: some
-- process that has been heart-beating without a gap for the whole timeout (the database
-- answered it all along, so a worker silent meanwhile really stopped).
--
-- beating_since is when this process's current run of beats began: the heartbeat upsert
-- resets it to now() whenever the previous beat is older than the gap a healthy process never
-- leaves (see HeartbeatService.continuityGap), or the row said it had stopped.

ALTER TABLE worker_heartbeats ADD COLUMN beating_since timestamptz NOT NULL DEFAULT now();

COMMENT ON COLUMN worker_heartbeats.beating_since IS
    'Start of this process''s current run of heartbeats without a gap (reset after an outage); a rescue of lost workers needs a witness beating without a gap for the whole timeout';

-- Rate-limit counters: Postgres decides every admission; Redis, when configured, only holds a
-- copy of each doctor's count so that a message over budget is refused without a write here.
-- The copy is written after each change of a row, and a copy older than the one Redis holds
-- must not overwrite it (two workers' writes may reach Redis out of order): versao counts the
-- row's changes (the row lock orders them) and Redis keeps the copy of the highest versao.

ALTER TABLE rate_limit_counters ADD COLUMN versao bigint NOT NULL DEFAULT 0 CHECK (versao >= 0);

COMMENT ON COLUMN rate_limit_counters.versao IS
    'Changes to this row so far; orders the copies of usado held in Redis';

COMMENT ON TABLE rate_limit_counters IS
    'Weight of the messages sent to each doctor per day (seed T04.1/T04.2); the store of record, Redis or not';
