import Synchronization

/// Live numbers a heartbeat reports, updated by the worker without locks held across awaits.
public final class ProcessStats: Sendable {
    public enum Status: String, Sendable {
        case running, draining, stopped
    }

    private let inFlightCount = Atomic<Int>(0)
    private let processedCount = Atomic<Int>(0)
    private let currentStatus = Mutex(Status.running)
    private let pauseReason = Mutex<String?>(nil)
    private let lastClaimLoopTurn = Mutex<ContinuousClock.Instant?>(nil)

    public init() {}

    public var inFlight: Int { inFlightCount.load(ordering: .relaxed) }
    public var processed: Int { processedCount.load(ordering: .relaxed) }
    public var status: Status { currentStatus.withLock { $0 } }

    public func addInFlight(_ delta: Int) { inFlightCount.add(delta, ordering: .relaxed) }
    public func addProcessed(_ delta: Int) { processedCount.add(delta, ordering: .relaxed) }
    public func set(_ status: Status) { currentStatus.withLock { $0 = status } }

    /// Why the worker is not claiming (every provider's circuit open), or nil. Shown in the
    /// heartbeat row's `metadata.paused`.
    public var paused: String? { pauseReason.withLock { $0 } }
    public func setPaused(_ reason: String?) { pauseReason.withLock { $0 = reason } }

    /// When the worker's claim loop last went round, on this process's monotonic clock; nil
    /// in a process without one. The heartbeat reports its age, so a worker that beats while
    /// its loop is stuck stops counting as alive.
    public var claimLoopTurn: ContinuousClock.Instant? { lastClaimLoopTurn.withLock { $0 } }

    /// How long ago the claim loop last went round; nil without a claim loop.
    public var claimLoopAge: Duration? { claimLoopTurn.map { ContinuousClock.now - $0 } }

    /// Records a turn of the claim loop now. The loop also calls it when it is built, so a
    /// loop that never starts ages from there rather than looking like no loop at all.
    public func markClaimLoopTurn() {
        let now = ContinuousClock.now
        lastClaimLoopTurn.withLock { $0 = now }
    }
}
