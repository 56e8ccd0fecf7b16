import Synchronization

/// Wakes one waiting task. Signals while nobody waits collapse into one, so a burst of
/// notifications costs one wake-up. `workMayBeAvailable` says whether a wake-up came
/// from new work (a NOTIFY, the poll tick) rather than from a freed slot.
public final class WakeSignal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let work = Atomic<Bool>(true)

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// New rows may be claimable (a notification arrived, or the poll interval passed).
    public func signalWork() {
        work.store(true, ordering: .releasing)
        continuation.yield()
    }

    /// Something else changed (a slot freed, shutdown began): look again.
    public func signal() {
        continuation.yield()
    }

    /// Returns whether work was signalled since the last call, and clears it.
    public func takeWork() -> Bool {
        work.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// An iterator for the single waiting task.
    public func makeWaiter() -> AsyncStream<Void>.Iterator {
        stream.makeAsyncIterator()
    }

    /// Ends every wait for good.
    public func finish() {
        continuation.finish()
    }
}
