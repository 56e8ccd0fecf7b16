import Foundation
@testable import Resilience
import Testing

/// The Redis outage tracking alone, with time and randomness as parameters: going down,
/// one prober at a time, recovery, and the growing, capped wait between probes.
@Suite struct RedisOutageStateMachineTests {
    typealias Machine = RedisOutageStateMachine
    let start = ContinuousClock.now
    let startDate = Date(timeIntervalSince1970: 1_800_000_000)

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .seconds(seconds) }

    /// Always the top of the range asked for: each jittered wait is its longest.
    struct Longest: RandomNumberGenerator {
        mutating func next() -> UInt64 { .max }
    }

    /// A seeded generator (SplitMix64), so a random run is the same every time.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @discardableResult
    func fail(_ machine: inout Machine, at time: Double, error: String = "connection refused") -> Machine.Failure {
        var generator = Longest()
        return machine.recordFailure(error, now: at(time), date: startDate.addingTimeInterval(time), using: &generator)
    }

    func delay(of failure: Machine.Failure) -> Duration {
        switch failure {
        case .wentDown(let wait), .stillDown(let wait): return wait
        }
    }

    func isClose(_ duration: Duration, _ seconds: Double) -> Bool {
        abs(duration.seconds - seconds) < 1e-6
    }

    @Test func upUsesRedis() {
        var machine = Machine(retryInterval: .seconds(2))
        #expect(machine.admit(now: at(0)) == .use)
        #expect(machine.admit(now: at(0)) == .use, "any number of callers")
        #expect(!machine.isDown)
        #expect(machine.health == .up)
        #expect(machine.recordSuccess(now: at(1)) == .stillUp)
    }

    @Test func theFirstFailureMarksDownAndSchedulesAProbe() {
        var machine = Machine(retryInterval: .seconds(2))
        let failure = fail(&machine, at: 10, error: "ECONNREFUSED")
        // The first wait is jittered between the interval and three times it.
        guard case .wentDown(let wait) = failure else {
            Issue.record("the first failure should report the outage, not \(failure)")
            return
        }
        #expect(isClose(wait, 6))
        #expect(machine.isDown)
        #expect(machine.nextProbe == at(10) + wait)
        #expect(machine.health == .down(since: startDate.addingTimeInterval(10), error: "ECONNREFUSED"))
        // Until the probe is due every caller skips Redis.
        #expect(machine.admit(now: at(10)) == .skip)
        #expect(machine.admit(now: at(15.9)) == .skip)
        #expect(machine.admit(now: at(16)) == .probe)
    }

    @Test func theFirstWaitStaysWithinItsRange() {
        var generator = Seeded(state: 7)
        for _ in 0..<200 {
            var machine = Machine(retryInterval: .seconds(2))
            let wait = delay(of: machine.recordFailure("x", now: at(0), date: startDate, using: &generator))
            #expect(wait >= .seconds(2) && wait <= .seconds(6))
        }
    }

    @Test func onlyOneCallerProbesWhileTheOthersSkipRedis() {
        var machine = Machine(retryInterval: .seconds(2))
        fail(&machine, at: 0)
        #expect(machine.admit(now: at(6)) == .probe)
        #expect(machine.isProbing)
        // However long the probe takes, nobody else asks Redis meanwhile.
        #expect(machine.admit(now: at(6)) == .skip)
        #expect(machine.admit(now: at(600)) == .skip)
        #expect(!Machine.Admission.skip.asksRedis)
        #expect(Machine.Admission.probe.asksRedis && Machine.Admission.use.asksRedis)
    }

    @Test func aSuccessfulProbeRecoversAndReportsHowLongRedisWasDown() {
        var machine = Machine(retryInterval: .seconds(2))
        fail(&machine, at: 0)
        #expect(machine.admit(now: at(6)) == .probe)
        #expect(machine.recordSuccess(now: at(6.5)) == .recovered(downFor: .seconds(6.5)))
        #expect(!machine.isDown && !machine.isProbing)
        #expect(machine.health == .up)
        #expect(machine.admit(now: at(6.5)) == .use)
        #expect(machine.admit(now: at(6.5)) == .use)
        #expect(machine.recordSuccess(now: at(7)) == .stillUp, "recovery is reported once")
    }

    @Test func aFailedProbeBacksOffFurtherUpToTenTimesTheInterval() {
        var machine = Machine(retryInterval: .seconds(2))
        var now = 0.0
        var waits = [delay(of: fail(&machine, at: now))]
        for _ in 0..<4 {
            now += waits.last?.seconds ?? 0
            #expect(machine.admit(now: at(now)) == .probe)
            let failure = fail(&machine, at: now)
            guard case .stillDown(let wait) = failure else {
                Issue.record("a failed probe should not report the outage again, not \(failure)")
                return
            }
            #expect(machine.nextProbe == at(now) + wait)
            #expect(!machine.isProbing)
            waits.append(wait)
        }
        // Each wait is at most three times the last, capped at 20 s.
        #expect(zip(waits, [6.0, 18, 20, 20, 20]).allSatisfy { isClose($0, $1) }, "waits: \(waits)")
        #expect(machine.admit(now: at(now + 19.9)) == .skip)
        #expect(machine.admit(now: at(now + 20)) == .probe)
    }

    @Test func randomWaitsNeverLeaveTheirBounds() {
        var machine = Machine(retryInterval: .seconds(2))
        var generator = Seeded(state: 42)
        var previous: Duration?
        for attempt in 0..<200 {
            let wait = delay(of: machine.recordFailure("x", now: at(Double(attempt)), date: startDate, using: &generator))
            let ceiling = min(Duration.seconds(20), (previous ?? .seconds(2)) * 3)
            #expect(wait >= .seconds(2) && wait <= ceiling, "attempt \(attempt): \(wait) after \(String(describing: previous))")
            previous = wait
        }
    }

    /// A call that began before the outage and fails after it was reported says nothing new:
    /// the outage is logged once, and its start stays the first failure's.
    @Test func laterFailuresAreNotReportedAgainAndKeepTheOutagesStart() {
        var machine = Machine(retryInterval: .seconds(2))
        #expect(machine.admit(now: at(0)) == .use)
        #expect(machine.admit(now: at(0)) == .use)
        guard case .wentDown = fail(&machine, at: 1, error: "timeout") else {
            Issue.record("the first failure should report the outage")
            return
        }
        guard case .stillDown = fail(&machine, at: 1.2, error: "connection reset") else {
            Issue.record("the second failure should not report the outage again")
            return
        }
        #expect(machine.health == .down(since: startDate.addingTimeInterval(1), error: "connection reset"))
    }

    @Test func aCancelledProbeLetsAnotherCallerProbe() {
        var machine = Machine(retryInterval: .seconds(2))
        fail(&machine, at: 0)
        #expect(machine.admit(now: at(6)) == .probe)
        machine.probeEnded()
        #expect(machine.isDown)
        #expect(machine.admit(now: at(6.1)) == .probe)
    }

    @Test func aCancelledCallWhileUpChangesNothing() {
        var machine = Machine(retryInterval: .seconds(2))
        #expect(machine.admit(now: at(0)) == .use)
        machine.probeEnded()
        #expect(!machine.isDown)
        #expect(machine.admit(now: at(0)) == .use)
    }

    /// After a recovery, the next outage starts over: reported again, from its own start,
    /// with the first wait again.
    @Test func aNewOutageAfterARecoveryStartsOver() {
        var machine = Machine(retryInterval: .seconds(2))
        fail(&machine, at: 0)
        #expect(machine.admit(now: at(6)) == .probe)
        fail(&machine, at: 6)
        #expect(machine.admit(now: at(24)) == .probe)
        #expect(machine.recordSuccess(now: at(24)) == .recovered(downFor: .seconds(24)))

        let failure = fail(&machine, at: 100, error: "gone again")
        guard case .wentDown(let wait) = failure else {
            Issue.record("a new outage should be reported, not \(failure)")
            return
        }
        #expect(isClose(wait, 6))
        #expect(machine.health == .down(since: startDate.addingTimeInterval(100), error: "gone again"))
    }
}
