#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Observability
import PostgresNIO
import Primitives

/// Runs one execution of a job, whoever asked for it (scheduler, HTTP, CLI, psql).
///
/// Two runs of one job never overlap, on any replica: a run holds a transaction-scoped
/// advisory lock on the job's name for as long as it works (pooler-safe: it dies with the
/// transaction or the connection). The transaction lives on a connection of the run's own,
/// outside the pool, so lock holders can never starve the pool their handlers and
/// bookkeeping need. A run that cannot take the lock is not started.
public struct JobRunner: Sendable {
    public let client: PostgresClient
    /// Where the lock connection goes (the same database as `client`).
    public let lockURL: DatabaseURL
    /// The `worker_heartbeats.id` of this process, written into `job_executions.worker_id`.
    public let workerID: String
    /// How often the idle lock connection is used, so that idle timeouts and dead peers
    /// are noticed; losing it cancels the handler (another run may take the lock).
    public var lockKeepAlive: Duration = .seconds(30)
    /// Where runs are counted (the task-local or global factory when the runner is made).
    public var metrics = JobMetrics()

    /// The first key of the two-part advisory lock ('fila' 'jb'); the second is the name's hash.
    static let lockClass: Int32 = 0x6669_6A62

    public init(client: PostgresClient, lockURL: DatabaseURL, workerID: String) {
        self.client = client
        self.lockURL = lockURL
        self.workerID = workerID
    }

    public enum Outcome: Sendable {
        /// The run happened (successfully or not); the row as it ended.
        case finished(JobExecution)
        /// Another run of the job holds the lock; the execution row, if any, is `skipped`.
        case alreadyRunning
        /// The execution row was no longer this process's to run (failed by a rescuer).
        case abandoned
    }

    /// Inserts a `running` row for `trigger` and runs it now, unless a run is going on; then
    /// nothing is written and the answer is `.alreadyRunning`. The run is stored with and
    /// logs `correlationID` (an HTTP request's), or a new id.
    public func runNow(_ job: JobDefinition, trigger: JobTrigger, correlationID: CorrelationID? = nil, logger: Logger) async throws -> Outcome {
        let correlationID = correlationID ?? .generate()
        return try await withJobLock(job.name, logger: logger) { connection, locked in
            guard let connection, locked else { return .alreadyRunning }
            // Through the pool, committed at once, so the row is visible while it runs (the
            // lock's connection is not from the pool: nothing here waits on itself). Written
            // as started: a row of a live process never waits `pending` for a start that may
            // not come (the insert and the start are one statement).
            let rows = try await client.query(
                """
                INSERT INTO job_executions (job_name, scheduled_for, status, started_at, triggered_by, worker_id, correlation_id)
                VALUES (\(job.name), now(), 'running', now(), \(trigger.rawValue), \(workerID), \(correlationID.value))
                RETURNING id
                """,
                logger: logger
            ).collect()
            // No row comes back when a trigger added with psql skips the insert.
            guard let row = rows.first else {
                throw DatabaseError(.queryFailed, "job \(job.name) was not run: the database did not record its job_executions row")
            }
            return try await perform(
                job, executionID: try row.decode(UUID.self), correlationID: correlationID, alreadyStarted: true, lockConnection: connection, logger: logger
            )
        }
    }

    /// Runs an execution row already claimed by this process (`pending`, `worker_id` = ours).
    /// When another run holds the lock, a scheduler's slot becomes `skipped`, and a run
    /// requested with psql is handed back (`pending`, no worker) for a later tick, so a
    /// request is never dropped because a run was going. When it throws, the row
    /// may still be `pending` (the lock connection could not open, the start could not be
    /// written): the claimer marks it failed (`JobScheduler` does, on its next tick).
    /// The run gets a new correlation id unless its row has one (inserted with psql).
    public func run(_ job: JobDefinition, executionID: UUID, logger: Logger) async throws -> Outcome {
        try await withJobLock(job.name, logger: logger) { connection, locked in
            guard let connection, locked else {
                let requested = try await client.query(
                    """
                    UPDATE job_executions
                       SET status = CASE WHEN triggered_by = 'psql' THEN 'pending' ELSE 'skipped' END,
                           finished_at = CASE WHEN triggered_by = 'psql' THEN NULL ELSE now() END,
                           error = CASE WHEN triggered_by = 'psql' THEN NULL ELSE 'the previous run was still going' END,
                           worker_id = CASE WHEN triggered_by = 'psql' THEN NULL ELSE worker_id END
                     WHERE id = \(executionID) AND status = 'pending'
                    RETURNING triggered_by = 'psql'
                    """,
                    logger: logger
                ).collect().first?.decode(Bool.self) ?? false
                if requested {
                    logger.info("requested job run waits: the previous run is still going", metadata: ["job.name": .string(job.name)])
                } else {
                    logger.warning("job run skipped: the previous run is still going", metadata: ["job.name": .string(job.name)])
                }
                return .alreadyRunning
            }
            return try await perform(
                job, executionID: executionID, correlationID: .generate(), alreadyStarted: false, lockConnection: connection, logger: logger
            )
        }
    }

    /// Opens the lock connection, begins a transaction and tries the job's transaction-scoped
    /// lock, held until `body` ends and the transaction closes (or the connection dies).
    private func withJobLock(_ name: String, logger: Logger, _ body: (PostgresConnection?, Bool) async throws -> Outcome) async throws -> Outcome {
        do {
            return try await lockURL.withConnection(logger: logger) { connection in
                try await connection.query("BEGIN", logger: logger)
                guard
                    let locked = try await connection.query(
                        "SELECT pg_try_advisory_xact_lock(\(Self.lockClass), hashtext(\(name)))",
                        logger: logger
                    ).collect().first?.decode(Bool.self)
                else {
                    throw DatabaseError(.queryFailed, "job \(name): taking its lock returned no answer")
                }
                let outcome: Outcome
                do {
                    outcome = try await body(locked ? connection : nil, locked)
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
                do {
                    try await connection.query("COMMIT", logger: logger)
                } catch {
                    // The run is recorded; the lock went with the transaction either way.
                    logger.warning("job lock connection lost after the run; the lock went with it", metadata: ["job.name": .string(name)])
                }
                return outcome
            }
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "job \(name) failed to run")
        }
    }

    /// Marks the row running, runs the handler under the job's timeout while keeping the lock
    /// connection alive, and writes how it ended. The handler's own failure is the run's
    /// result, not an error thrown here.
    private func perform(
        _ job: JobDefinition,
        executionID: UUID,
        correlationID proposed: CorrelationID,
        alreadyStarted: Bool,
        lockConnection: PostgresConnection,
        logger baseLogger: Logger
    ) async throws -> Outcome {
        var logger = baseLogger
        logger[metadataKey: "job.name"] = .string(job.name)
        logger[metadataKey: "job.execution_id"] = .string(executionID.uuidString.lowercased())
        var correlationID = proposed
        if !alreadyStarted {
            // Only a row still pending is started: one failed by a rescuer meanwhile stays failed.
            let started = try await client.query(
                """
                UPDATE job_executions
                   SET status = 'running', started_at = now(), worker_id = \(workerID),
                       correlation_id = coalesce(correlation_id, \(proposed.value))
                 WHERE id = \(executionID) AND status = 'pending'
                RETURNING correlation_id
                """,
                logger: logger
            ).collect()
            guard let row = started.first else {
                logger.warning("job run abandoned: its execution row is no longer pending")
                return .abandoned
            }
            // A psql-inserted row keeps its own id; one unfit for logs and headers is not
            // bound, and the run is followed by the new id instead.
            let stored = try row.decode(String.self)
            if let valid = CorrelationID(validating: stored) {
                correlationID = valid
            } else if stored != proposed.value {
                logger.warning(
                    "job run: the row's correlation_id is not \(CorrelationID.rule); its log lines carry a new one",
                    metadata: [Correlation.metadataKey: .string(proposed.value)]
                )
            }
        }
        logger = Correlation.logger(logger, with: correlationID)
        return try await Correlation.withID(correlationID) {
            try await perform(job, executionID: executionID, lockConnection: lockConnection, logger: logger)
        }
    }

    /// The run itself, with its row started and its correlation id bound.
    private func perform(_ job: JobDefinition, executionID: UUID, lockConnection: PostgresConnection, logger: Logger) async throws -> Outcome {
        logger.debug("job started")
        let context = JobContext(client: client, logger: logger, executionID: executionID, jobName: job.name)
        let ending = await Self.race(job.handler, context: context, timeout: job.timeout, keepAlive: lockKeepAlive, lockConnection: lockConnection, logger: logger)

        var status: JobExecution.Status
        var result: String? = nil
        var message: String? = nil
        switch ending.outcome {
        case .success(let value):
            status = .success
            result = value.text
        case .failure(let error):
            status = .failed
            message = String(describing: error)
            logger.error("job failed", metadata: ["error": .string(String(reflecting: error))])
        case .timedOut:
            status = .timeout
            message = "still running after \(job.timeout); cancelled"
            logger.error("job timed out", metadata: ["job.timeout": .stringConvertible(job.timeout)])
        case .lockLost:
            status = .failed
            message = "the connection holding the job's lock was lost; cancelled"
            logger.error("job lock lost; run cancelled")
        }
        let row = try await finish(executionID, status: status, result: result, error: message, logger: logger)
        metrics.record(row)
        // A handler that ignores cancellation keeps the lock until it really ends, so no
        // other run can overlap it; its row already says how it ended.
        await ending.handlerEnded()
        if status == .success {
            logger.info("job finished", metadata: ["job.duration_ms": .stringConvertible(row.durationMs ?? 0)])
        }
        if let duration = row.durationMs, duration > job.sla.milliseconds {
            logger.warning("job run over its SLA", metadata: ["job.duration_ms": .stringConvertible(duration), "job.sla_ms": .stringConvertible(job.sla.milliseconds)])
        }
        return .finished(row)
    }

    /// Writes the end of a run, from an unstructured task so that a cancelled caller
    /// (shutdown) still records it, retrying briefly; a result the database refuses is
    /// replaced by the reason, so the row never stays `running`.
    private func finish(_ executionID: UUID, status: JobExecution.Status, result: String?, error message: String?, logger: Logger) async throws -> JobExecution {
        let client = client
        return try await Task {
            var attempt = 0
            var result = result
            var message = message
            var status = status
            while true {
                attempt += 1
                do {
                    let rows = try await client.query(
                        """
                        UPDATE job_executions
                           SET status = \(status.rawValue), finished_at = now(),
                               duration_ms = greatest(0, (extract(epoch FROM now() - started_at) * 1000)::bigint),
                               result = \(result)::jsonb, error = \(message)
                         WHERE id = \(executionID)
                        RETURNING id
                        """,
                        logger: logger
                    ).collect()
                    guard !rows.isEmpty else { throw DatabaseError(.queryFailed, "job execution \(executionID) disappeared while running") }
                    // Read back through the pool: the row may be gone by now (deleted by hand, or by
                    // a trigger), which is an error to report, not a reason to crash.
                    guard let row = try await client.query("\(unescaped: JobExecution.select) WHERE e.id = \(executionID)", logger: logger).collect().first else {
                        throw DatabaseError(.queryFailed, "job execution \(executionID) disappeared as it finished")
                    }
                    return try JobExecution(row: row)
                } catch let error as PSQLError where error.serverInfo?[.sqlState]?.hasPrefix("22") == true && result != nil {
                    // Data the database refuses (say, a NUL in the result): keep the reason.
                    logger.error("job result could not be stored", metadata: ["error": .string(String(reflecting: error))])
                    message = "the result could not be stored: \(error.serverInfo?[.message] ?? "invalid data")"
                    result = nil
                    if status == .success { status = .failed }
                } catch {
                    if attempt >= 5 { throw DatabaseError(wrapping: error, context: "recording the end of job execution \(executionID) failed") }
                    try? await Task.sleep(for: .milliseconds(200 * attempt))
                }
            }
        }.value
    }

    enum Ending: Sendable {
        case success(JSONValue)
        case failure(any Error)
        case timedOut
        case lockLost
    }

    struct RaceResult: Sendable {
        let outcome: Ending
        /// Waits until the handler has really returned (it may ignore cancellation).
        let handlerEnded: @Sendable () async -> Void
    }

    /// Runs the handler in a task of its own and waits for the first of: its end, the
    /// timeout, or the lock connection failing a keep-alive. The handler is cancelled when it
    /// loses, but the answer does not wait for it to stop.
    static func race(
        _ handler: @escaping JobDefinition.Handler,
        context: JobContext,
        timeout: Duration,
        keepAlive: Duration,
        lockConnection: PostgresConnection,
        logger: Logger
    ) async -> RaceResult {
        let first = FirstResult<Ending>()
        let handlerTask = Task {
            do {
                first.offer(.success(try await handler(context)))
            } catch {
                first.offer(.failure(error))
            }
        }
        let watchdog = Task {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                do {
                    try await Task.sleep(for: min(keepAlive, deadline - ContinuousClock.now))
                } catch {
                    return  // the handler ended first
                }
                if ContinuousClock.now >= deadline { break }
                do {
                    _ = try await lockConnection.query("SELECT 1", logger: logger)
                } catch {
                    first.offer(.lockLost)
                    return
                }
            }
            first.offer(.timedOut)
        }
        let outcome = await first.value
        handlerTask.cancel()
        watchdog.cancel()
        return RaceResult(outcome: outcome, handlerEnded: { await handlerTask.value })
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
