#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO

/// Runs one execution of a job, whoever asked for it (scheduler, HTTP, CLI, psql).
///
/// Two runs of one job never overlap, on any replica: a run holds a transaction-scoped
/// advisory lock on the job's name for as long as it works, on a connection of its own
/// (pooler-safe: the lock dies with the transaction or the connection). A run that cannot
/// take the lock is not started.
public struct JobRunner: Sendable {
    public let client: PostgresClient
    /// The `worker_heartbeats.id` of this process, written into `job_executions.worker_id`.
    public let workerID: String

    /// The first key of the two-part advisory lock ('fila' 'jb'); the second is the name's hash.
    static let lockClass: Int32 = 0x6669_6A62

    public init(client: PostgresClient, workerID: String) {
        self.client = client
        self.workerID = workerID
    }

    public enum Outcome: Sendable {
        /// The run happened (successfully or not); the row as it ended.
        case finished(JobExecution)
        /// Another run of the job holds the lock; the execution row, if any, is `skipped`.
        case alreadyRunning
    }

    /// Inserts a `pending` row for `trigger` and runs it now, unless a run is going on; then
    /// nothing is written and the answer is `.alreadyRunning`.
    public func runNow(_ job: JobDefinition, trigger: JobTrigger, correlationID: String? = nil, logger: Logger) async throws -> Outcome {
        try await withJobLock(job.name, logger: logger) { locked in
            guard locked else { return .alreadyRunning }
            let id = try await client.query(
                """
                INSERT INTO job_executions (job_name, scheduled_for, status, triggered_by, worker_id, correlation_id)
                VALUES (\(job.name), now(), 'pending', \(trigger.rawValue), \(workerID), \(correlationID))
                RETURNING id
                """,
                logger: logger
            ).collect().first!.decode(UUID.self)
            return .finished(try await perform(job, executionID: id, logger: logger))
        }
    }

    /// Runs an execution row already claimed by this process (`pending`, `worker_id` = ours).
    /// When another run holds the lock, the row becomes `skipped`.
    public func run(_ job: JobDefinition, executionID: UUID, logger: Logger) async throws -> Outcome {
        try await withJobLock(job.name, logger: logger) { locked in
            guard locked else {
                try await client.query(
                    """
                    UPDATE job_executions
                       SET status = 'skipped', finished_at = now(), error = 'the previous run was still going'
                     WHERE id = \(executionID) AND status = 'pending'
                    """,
                    logger: logger
                )
                logger.warning("job run skipped: the previous run is still going", metadata: ["job.name": .string(job.name)])
                return .alreadyRunning
            }
            return .finished(try await perform(job, executionID: executionID, logger: logger))
        }
    }

    /// Holds the job's advisory lock (if free) in a transaction around `body`.
    private func withJobLock<Result: Sendable>(_ name: String, logger: Logger, _ body: (Bool) async throws -> Result) async throws -> Result {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                let locked = try await connection.query(
                    "SELECT pg_try_advisory_xact_lock(\(Self.lockClass), hashtext(\(name)))",
                    logger: logger
                ).collect().first!.decode(Bool.self)
                return try await body(locked)
            }
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "job \(name) failed to run")
        }
    }

    /// Marks the row running, runs the handler under the job's timeout, and writes how it
    /// ended. The handler's own failure is the run's result, not an error thrown here.
    private func perform(_ job: JobDefinition, executionID: UUID, logger baseLogger: Logger) async throws -> JobExecution {
        var logger = baseLogger
        logger[metadataKey: "job.name"] = .string(job.name)
        logger[metadataKey: "job.execution_id"] = .string(executionID.uuidString.lowercased())
        try await client.query(
            """
            UPDATE job_executions SET status = 'running', started_at = now(), worker_id = \(workerID)
             WHERE id = \(executionID)
            """,
            logger: logger
        )
        logger.debug("job started")
        let context = JobContext(client: client, logger: logger, executionID: executionID, jobName: job.name)
        let ending = await Self.race(job.handler, context: context, timeout: job.timeout)

        let status: JobExecution.Status
        var result: String? = nil
        var message: String? = nil
        switch ending {
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
        }
        // Written from an unstructured task so that a cancelled caller (shutdown) still
        // records how the run ended.
        let client = client
        let finishingLogger = logger
        let row = try await Task {
            try await client.query(
                """
                UPDATE job_executions
                   SET status = \(status.rawValue), finished_at = now(),
                       duration_ms = greatest(0, (extract(epoch FROM now() - started_at) * 1000)::bigint),
                       result = \(result)::jsonb, error = \(message)
                 WHERE id = \(executionID)
                """,
                logger: finishingLogger
            )
            return try await client.query("\(unescaped: JobExecution.select) WHERE e.id = \(executionID)", logger: finishingLogger)
                .collect().first.map(JobExecution.init(row:))
        }.value
        guard let row else { throw DatabaseError(.queryFailed, "job execution \(executionID) disappeared while running") }
        if status == .success {
            logger.info("job finished", metadata: ["job.duration_ms": .stringConvertible(row.durationMs ?? 0)])
        }
        if let duration = row.durationMs, duration > job.sla.milliseconds {
            logger.warning("job run over its SLA", metadata: ["job.duration_ms": .stringConvertible(duration), "job.sla_ms": .stringConvertible(job.sla.milliseconds)])
        }
        return row
    }

    enum Ending: Sendable {
        case success(JSONValue)
        case failure(any Error)
        case timedOut
    }

    /// The handler raced against its timeout; the loser is cancelled.
    static func race(_ handler: @escaping JobDefinition.Handler, context: JobContext, timeout: Duration) async -> Ending {
        await withTaskGroup(of: Ending.self) { group in
            group.addTask {
                do {
                    return .success(try await handler(context))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .failure(CancellationError())
                }
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
