#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// Runs `operation` but stops waiting for it after `limit`, throwing `onTimeout()`.
///
/// The caller gets its answer on time even from a call that ignores cancellation (a wedged
/// connection). Without `whenAbandoned`, the abandoned call is cancelled and left to end on
/// its own. With it, the call is left to run to its end, and if it still succeeds its result
/// goes to `whenAbandoned`, so work it did (a row it wrote) can be undone. Cancelling the
/// caller cancels the call in either case.
public func withTimeLimit<Result: Sendable>(
    _ limit: Duration,
    onTimeout: @escaping @Sendable () -> any Error,
    whenAbandoned: (@Sendable (Result) async -> Void)? = nil,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let race = FirstResult<Swift.Result<Result, any Error>>()
    let work = Task {
        do {
            let value = try await operation()
            if !race.offer(.success(value)) { await whenAbandoned?(value) }
        } catch {
            race.offer(.failure(error))
        }
    }
    let timer = Task {
        try? await Task.sleep(for: limit)
        race.offer(.failure(onTimeout()))
    }
    // Cancelled (say, shutdown ran out of time): stop waiting at once too, since the call
    // itself may not notice cancellation.
    let outcome = await withTaskCancellationHandler {
        await race.value
    } onCancel: {
        work.cancel()
        race.offer(.failure(CancellationError()))
    }
    timer.cancel()
    // A call that timed out is cancelled, unless its late result is wanted: then it runs on,
    // so a success that arrives after the deadline (a claim that committed behind a lock)
    // reaches `whenAbandoned` instead of being dropped half-read by the cancellation.
    if case .failure = outcome, whenAbandoned == nil { work.cancel() }
    return try outcome.get()
}

/// The first of several racers to offer a value wins; later offers are ignored. `value`
/// waits for the winner (and returns at once if there already is one).
public final class FirstResult<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiters: [CheckedContinuation<Value, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Offers a value; returns whether it won.
    @discardableResult
    public func offer(_ value: Value) -> Bool {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, Never>]? in
            guard state.value == nil else { return nil }
            state.value = value
            defer { state.waiters = [] }
            return state.waiters
        }
        guard let waiters else { return false }
        for waiter in waiters { waiter.resume(returning: value) }
        return true
    }

    public var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Value? in
                    if let value = state.value { return value }
                    state.waiters.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}
