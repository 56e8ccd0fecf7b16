import Logging
import Primitives
import Synchronization

/// Gauges read at scrape time from something slow or fallible (the database), cached for
/// `maximumAge` and read under `timeLimit`: scrapes never wait longer than the limit, and
/// many scrapers (or many scrapes a second) cost one read per `maximumAge`.
///
/// When a read fails or times out, the last values stay (they are labelled by when they were
/// read through `wa_metrics_sample_age_seconds`) and `wa_metrics_sample_ok` turns 0, so a
/// dashboard can tell a quiet queue from a blind one.
public final class SampledMetrics: Sendable {
    /// Names this source in `wa_metrics_sample_ok{source}`.
    public let source: String
    public let maximumAge: Duration
    public let timeLimit: Duration
    private let read: @Sendable () async throws -> [MetricSample]
    private let state = Mutex(State())

    private struct State {
        var samples: [MetricSample] = []
        var readAt: ContinuousClock.Instant?
        var ok = false
        var reading = false
    }

    /// The freshest values, whether the last read worked, and how old the values are.
    public struct Reading: Sendable {
        public let samples: [MetricSample]
        public let ok: Bool
        public let age: Duration?
    }

    public init(source: String, maximumAge: Duration = .seconds(5), timeLimit: Duration = .seconds(1), read: @escaping @Sendable () async throws -> [MetricSample]) {
        self.source = source
        self.maximumAge = maximumAge
        self.timeLimit = timeLimit
        self.read = read
    }

    /// The cached values when fresh enough, otherwise a new read within `timeLimit`. A scrape
    /// that arrives while another is reading gets the cached values instead of a second read.
    public func current(logger: Logger) async -> Reading {
        let now = ContinuousClock.now
        let mustRead = state.withLock { state -> Bool in
            if state.reading { return false }
            if let readAt = state.readAt, now - readAt < maximumAge { return false }
            state.reading = true
            return true
        }
        if mustRead {
            let limit = timeLimit
            let source = source
            do {
                let samples = try await withTimeLimit(limit, onTimeout: { SampleTimedOut(source: source, limit: limit) }, read)
                state.withLock {
                    $0.samples = samples
                    $0.readAt = ContinuousClock.now
                    $0.ok = true
                    $0.reading = false
                }
            } catch {
                logger.warning("cannot sample metrics; serving the last values", metadata: ["metrics.source": .string(source), "error": .string(String(reflecting: error))])
                state.withLock {
                    $0.ok = false
                    $0.reading = false
                }
            }
        }
        return state.withLock { state in
            Reading(samples: state.samples, ok: state.ok, age: state.readAt.map { ContinuousClock.now - $0 })
        }
    }
}

struct SampleTimedOut: Error, CustomStringConvertible {
    let source: String
    let limit: Duration
    var description: String { "\(source) metrics not read within \(limit)" }
}
