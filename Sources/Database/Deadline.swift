import Primitives

/// Runs `operation` but stops waiting for it after `limit`, throwing a `DatabaseError`.
///
/// A database call that never answers (a connection wedged by a server restart, a lease
/// that is never granted) must not stall a worker forever: past the deadline the caller
/// moves on and retries. Whatever the abandoned call may have committed is reconciled by
/// the caller (unconfirmed claims are handed back; outcomes are fenced).
///
/// Without `whenAbandoned` the abandoned call is cancelled and left to end on its own. With
/// it, the call runs to its end (cancelling it could drop rows it already committed) and a
/// late success goes to `whenAbandoned` (a claim that committed late), so its work can be
/// handed back.
public func withDeadline<Result: Sendable>(
    _ limit: Duration,
    what: String,
    whenAbandoned: (@Sendable (Result) async -> Void)? = nil,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withTimeLimit(
        limit,
        onTimeout: { DatabaseError(.queryFailed, "\(what): no answer from Postgres within \(limit)") },
        whenAbandoned: whenAbandoned,
        operation
    )
}
