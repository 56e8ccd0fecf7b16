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
}
