#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Primitives

/// Whether the rate limiter should ask Redis, with no clock, no locks and no I/O: every
/// method takes the current instant (and the randomness it needs) and says what to do, so
/// an outage can be played through in a test. `RateLimiter` wraps it for concurrent callers
/// and does the logging and the calls.
///
/// - Up: every caller uses Redis.
/// - The first failure marks Redis down (the outage is reported once) and schedules a probe
///   after one to three times `retryInterval` (jittered); meanwhile callers skip Redis and go
///   straight to Postgres.
/// - Once the probe is due, exactly one caller probes; the others keep skipping Redis until
///   it answers. A probe that succeeds brings Redis back (reported once, with how long it was
///   down); one that fails schedules the next probe further away, with decorrelated jitter
///   up to ten times `retryInterval`, so workers that lost Redis together do not all come
///   back to it in the same instant and a long outage is probed less often.
struct RedisOutageStateMachine: Sendable {
    typealias Instant = ContinuousClock.Instant

    /// Whether a caller asks Redis now.
    enum Admission: Sendable, Hashable {
        /// Redis is up: use it.
        case use
        /// Redis is down and this caller is the one to see whether it is back.
        case probe
        /// Redis is down: go to Postgres without asking it.
        case skip

        var asksRedis: Bool { self != .skip }
    }

    /// What a failure changed.
    enum Failure: Sendable, Hashable {
        /// Redis was up until now: report the outage.
        case wentDown(nextProbeIn: Duration)
        /// Already down (a probe, or a call begun before the outage, failed): nothing new
        /// to report; the next probe waits longer.
        case stillDown(nextProbeIn: Duration)
    }

    /// What a success changed.
    enum Success: Sendable, Hashable {
        /// Redis was up already.
        case stillUp
        /// Redis was down for `downFor`: report that it answers again.
        case recovered(downFor: Duration)
    }

    /// The first wait before probing a failed Redis; later waits grow up to ten times this.
    let retryInterval: Duration
    private let backoff: Backoff
    private var outage: Outage?

    private struct Outage: Sendable {
        var since: Instant
        var sinceDate: Date
        var lastError: String
        var retryDelay: Duration
        var nextProbe: Instant
        var probing = false
    }

    init(retryInterval: Duration) {
        self.retryInterval = retryInterval
        self.backoff = Backoff(base: retryInterval, multiplier: 2, maximum: retryInterval * 10, jitter: .none)
    }

    var isDown: Bool { outage != nil }

    /// Whether a probe is under way.
    var isProbing: Bool { outage?.probing ?? false }

    /// When the next probe may start (nil while up).
    var nextProbe: Instant? { outage?.nextProbe }

    /// How the outage looks to a health check: its start in wall-clock time, for people,
    /// and the last error.
    var health: RateLimiter.RedisHealth {
        guard let outage else { return .up }
        return .down(since: outage.sinceDate, error: outage.lastError)
    }

    /// Asks whether to call Redis now. While down, the first caller after the wait becomes
    /// the prober, and stays so until it reports a result (or `probeEnded()`).
    mutating func admit(now: Instant) -> Admission {
        guard var outage else { return .use }
        guard !outage.probing, now >= outage.nextProbe else { return .skip }
        outage.probing = true
        self.outage = outage
        return .probe
    }

    /// Redis answered.
    mutating func recordSuccess(now: Instant) -> Success {
        guard let outage else { return .stillUp }
        self.outage = nil
        return .recovered(downFor: now - outage.since)
    }

    /// Redis failed (an error, or no answer in time). `date` is the wall-clock time, shown
    /// by `health` as the start of an outage; `generator` jitters the next probe's wait.
    mutating func recordFailure(
        _ error: String,
        now: Instant,
        date: Date,
        using generator: inout some RandomNumberGenerator
    ) -> Failure {
        guard var outage else {
            let delay = backoff.decorrelatedDelay(after: nil, using: &generator)
            outage = Outage(since: now, sinceDate: date, lastError: error, retryDelay: delay, nextProbe: now + delay)
            return .wentDown(nextProbeIn: delay)
        }
        outage.retryDelay = backoff.decorrelatedDelay(after: outage.retryDelay, using: &generator)
        outage.nextProbe = now + outage.retryDelay
        outage.lastError = error
        outage.probing = false
        self.outage = outage
        return .stillDown(nextProbeIn: outage.retryDelay)
    }

    /// A probe that ended without an answer either way (cancelled): another caller may probe.
    mutating func probeEnded() {
        outage?.probing = false
    }
}
