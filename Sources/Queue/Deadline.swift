#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Synchronization

/// Runs `operation` but stops waiting for it after `limit`, throwing a `DatabaseError`.
///
/// A database call that never answers (a connection wedged by a server restart, a lease
/// that is never granted) must not stall a worker forever: past the deadline the caller
/// moves on and retries, and the abandoned call is cancelled and left to end on its own.
/// Whatever it may have committed is reconciled by the caller (unconfirmed claims are
/// handed back; outcomes are fenced).
func withDeadline<Result: Sendable>(
    _ limit: Duration,
    what: String,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let race = DeadlineRace<Result>()
    let work = Task {
        do {
            race.finish(.success(try await operation()))
        } catch {
            race.finish(.failure(error))
        }
    }
    let timer = Task {
        try? await Task.sleep(for: limit)
        race.finish(.failure(DatabaseError(.queryFailed, "\(what): no answer from Postgres within \(limit)")))
    }
    // Cancelled (say, shutdown ran out of time): stop waiting at once too, since the call
    // itself may not notice cancellation.
    let outcome = await withTaskCancellationHandler {
        await race.wait()
    } onCancel: {
        work.cancel()
        race.finish(.failure(CancellationError()))
    }
    timer.cancel()
    if case .failure = outcome { work.cancel() }
    return try outcome.get()
}

private final class DeadlineRace<Value: Sendable>: Sendable {
    private struct State {
        var outcome: Swift.Result<Value, any Error>?
        var waiter: CheckedContinuation<Swift.Result<Value, any Error>, Never>?
    }

    private let state = Mutex(State())

    func finish(_ outcome: Swift.Result<Value, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Swift.Result<Value, any Error>, Never>? in
            guard state.outcome == nil else { return nil }
            state.outcome = outcome
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outcome)
    }

    func wait() async -> Swift.Result<Value, any Error> {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Swift.Result<Value, any Error>? in
                if let outcome = state.outcome { return outcome }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
