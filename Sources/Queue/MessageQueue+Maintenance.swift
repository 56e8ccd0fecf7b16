#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives

extension MessageQueue {
    /// Returns to `pendente` the rows held by workers that are not alive by the liveness
    /// rule (`fila_process_alive`: a heartbeat within `fila_heartbeat_timeout()`, 2 minutes
    /// unless `app_settings` says otherwise), that never wrote a heartbeat, or that said they
    /// stopped: outcome FAILED_WORKER_LOST, no attempt burned.
    ///
    /// This is "the worker died", distinct from `resetStuck` ("the attempt ran too long").
    /// A stale heartbeat proves nothing when the database itself was away: right after an
    /// outage longer than the timeout every heartbeat is stale, while the workers are alive
    /// and hold messages they already sent. So nothing is rescued unless some process (this
    /// one, a scheduler, another worker) has been heart-beating without a gap for the whole
    /// timeout (`fila_process_witness`, from `worker_heartbeats.beating_since`): then a
    /// worker silent meanwhile was silent
    /// while the database answered. A server restart needs no rule of its own: one short
    /// enough to leave every run of beats unbroken cannot make a live worker stale, and a
    /// longer one breaks every run.
    @discardableResult
    public func rescueLostWorkers(logger: Logger) async throws -> LostWorkerRescue {
        let query: PostgresQuery = """
            WITH guard AS (
                SELECT EXISTS (SELECT 1 FROM worker_heartbeats w WHERE fila_process_witness(w)) AS ok),
            rescued AS (
                UPDATE fila_mensagens m
                   SET status = 'pendente', agendar_para = now(),
                       outcome = 'FAILED_WORKER_LOST', outcome_reason_code = 'worker_lost:' || m.worker_id,
                       outcome_at = now(), worker_id = NULL, processando_desde = NULL, updated_at = now()
                 WHERE m.status = 'processando'
                   AND (SELECT ok FROM guard)
                   AND NOT EXISTS (SELECT 1 FROM worker_heartbeats h WHERE h.id = m.worker_id AND fila_process_alive(h))
                RETURNING 1)
            SELECT (SELECT count(*) FROM rescued), (SELECT ok FROM guard)
            """
        let rescue: LostWorkerRescue
        do {
            let row = try await client.query(query, logger: logger).collect().first
            let (count, judged) = try row?.decode((Int, Bool).self) ?? (0, false)
            rescue = LostWorkerRescue(rescued: count, judged: judged)
        } catch {
            throw DatabaseError(wrapping: error, context: "rescue of rows held by lost workers failed")
        }
        if rescue.rescued > 0 {
            try await notifyWorkers(logger: logger)
            logger.warning("rows returned to pendente: their worker stopped heart-beating", metadata: ["fila.rescued": .stringConvertible(rescue.rescued)])
        } else if !rescue.judged {
            logger.notice("no rescue of lost workers yet: no process has been heart-beating without a gap for the whole timeout (the database was down or out of reach), so stale heartbeats prove nothing")
        }
        return rescue
    }

    /// Hands back rows the database says `workerID` holds but the worker does not know of:
    /// a claim that committed while its answer was lost (the connection dropped at commit).
    /// `known` are the claims the worker did receive and has not finished writing, each by
    /// row and claim (a row claimed again since is a different claim). No attempt is burned
    /// (nothing was sent). Returns the count.
    @discardableResult
    public func releaseUnconfirmedClaims(workerID: String, known: Set<HeldClaim>, logger: Logger) async throws -> Int {
        let query: PostgresQuery = """
            WITH released AS (
                UPDATE fila_mensagens m
                   SET status = 'pendente', agendar_para = now(),
                       outcome = 'FAILED_WORKER_LOST', outcome_reason_code = 'claim_unconfirmed:' || m.worker_id,
                       outcome_at = now(), worker_id = NULL, processando_desde = NULL, updated_at = now()
                 WHERE m.status = 'processando' AND m.worker_id = \(workerID)
                   AND NOT EXISTS (
                       SELECT 1 FROM unnest(\(known.map(\.id))::uuid[], \(known.map(\.claimedAtMicroseconds))::int8[]) AS k(id, claimed_at)
                        WHERE k.id = m.id
                          AND k.claimed_at = (extract(epoch FROM m.processando_desde) * 1000000)::int8)
                RETURNING 1)
            SELECT count(*) FROM released
            """
        let count = try await countingStatement(query, what: "release of unconfirmed claims", logger: logger)
        if count > 0 {
            logger.warning("rows claimed while the connection dropped went back to pendente", metadata: ["fila.released": .stringConvertible(count)])
        }
        return count
    }

    /// Seed T01.1: rows `processando` for longer than `timeout` (default 60 minutes),
    /// whoever holds them, go back to `pendente` with an attempt burned (outcome
    /// FAILED_STUCK), or to `erro` if that was their last attempt. Returns the count.
    @discardableResult
    public func resetStuck(timeout: Duration = .seconds(3600), logger: Logger) async throws -> Int {
        let query: PostgresQuery = """
            WITH reset AS (
                UPDATE fila_mensagens m
                   SET status = CASE WHEN m.tentativas + 1 >= m.max_tentativas THEN 'erro' ELSE 'pendente' END,
                       tentativas = m.tentativas + 1, agendar_para = now(),
                       outcome = 'FAILED_STUCK', outcome_reason_code = 'stuck:' || coalesce(m.worker_id, '?'),
                       outcome_at = now(),
                       ultimo_erro = 'processando for more than ' || \(Int(timeout.seconds / 60)) || ' minutes',
                       worker_id = NULL, processando_desde = NULL, updated_at = now()
                 WHERE m.status = 'processando'
                   AND m.processando_desde < now() - make_interval(secs => \(timeout.seconds))
                RETURNING 1)
            SELECT count(*) FROM reset
            """
        let count = try await countingStatement(query, what: "reset of stuck rows", logger: logger)
        if count > 0 {
            try await notifyWorkers(logger: logger)
            logger.warning("stuck rows reset", metadata: ["fila.reset": .stringConvertible(count)])
        }
        return count
    }

    /// Seed T01.2: rows `pendente` for longer than `maximumAge` (default 24 hours) since
    /// they were created, and untouched for as long, are cancelled with outcome
    /// FAILED_EXPIRED. Returns the count.
    /// A row scheduled for later is not stale, only waiting: it is judged a day after it
    /// falls due (`agendar_para`), so a message booked two days out is not cancelled the
    /// moment its time comes. Nor is a row something happened to within `maximumAge`
    /// (`updated_at`): one an operator requeued (`ops.requeue`), or one a worker deferred to
    /// tomorrow for the doctor's rate limit, gets its day. What expires is what no worker and
    /// no person has touched for a day: the stale backlog of a queue nobody was serving.
    @discardableResult
    public func expireOld(maximumAge: Duration = .seconds(86_400), logger: Logger) async throws -> Int {
        let query: PostgresQuery = """
            WITH expired AS (
                UPDATE fila_mensagens m
                   SET status = 'cancelada', outcome = 'FAILED_EXPIRED',
                       outcome_reason_code = 'expired:' || \(Int(maximumAge.seconds / 3600)) || 'h',
                       outcome_at = now(), updated_at = now()
                 WHERE m.status = 'pendente'
                   AND m.agendar_para <= now()
                   AND m.created_at < now() - make_interval(secs => \(maximumAge.seconds))
                   AND m.updated_at < now() - make_interval(secs => \(maximumAge.seconds))
                   AND m.agendar_para < now() - make_interval(secs => \(maximumAge.seconds))
                RETURNING 1)
            SELECT count(*) FROM expired
            """
        let count = try await countingStatement(query, what: "expiry of old rows", logger: logger)
        if count > 0 {
            logger.warning("old pending rows cancelled", metadata: ["fila.expired": .stringConvertible(count)])
        }
        return count
    }

    /// Wakes every listening worker (rows became claimable outside an INSERT).
    func notifyWorkers(logger: Logger) async throws {
        try await client.query("SELECT pg_notify('fila_mensagens', '')", logger: logger)
    }

    private func countingStatement(_ query: PostgresQuery, what: String, logger: Logger) async throws -> Int {
        do {
            return try await client.query(query, logger: logger).collect().first?.decode(Int.self) ?? 0
        } catch {
            throw DatabaseError(wrapping: error, context: "\(what) failed")
        }
    }
}

/// What a rescue of lost workers did.
public struct LostWorkerRescue: Sendable, Hashable {
    /// Rows returned to `pendente`.
    public let rescued: Int
    /// False when nobody could be judged: no process has been heart-beating without a gap for
    /// the whole heartbeat timeout (the database was down or out of reach within it).
    public let judged: Bool
}

/// One claim of one row, as a worker holds it: the same row claimed again later is another.
public struct HeldClaim: Sendable, Hashable {
    public let id: UUID
    /// The claim's `processando_desde`, in microseconds (`ClaimToken.claimedAtMicroseconds`).
    public let claimedAtMicroseconds: Int64

    public init(id: UUID, claimedAtMicroseconds: Int64) {
        self.id = id
        self.claimedAtMicroseconds = claimedAtMicroseconds
    }
}

extension ClaimedMessage {
    public var heldClaim: HeldClaim { HeldClaim(id: id, claimedAtMicroseconds: claim.claimedAtMicroseconds) }
}

extension AttemptResult {
    public var heldClaim: HeldClaim { HeldClaim(id: messageID, claimedAtMicroseconds: claim.claimedAtMicroseconds) }
}
