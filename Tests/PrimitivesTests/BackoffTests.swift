import Primitives
import Testing

@Suite("Backoff and jitter")
struct BackoffTests {
    @Test func theRetryScheduleDoublesUpToItsCap() {
        let backoff = Backoff(base: .seconds(30), multiplier: 2, maximum: .seconds(1800), jitter: .none)
        let delays = (1...9).map { backoff.delay(forAttempt: $0) }
        #expect(delays == [30, 60, 120, 240, 480, 960, 1800, 1800, 1800].map { Duration.seconds($0) })
        #expect(backoff.delay(forAttempt: 10_000) == .seconds(1800))
    }

    @Test func jitterStaysWithinItsBounds() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let full = Jitter.full.apply(to: .seconds(10), using: &generator)
            #expect(full >= .zero && full <= .seconds(10))
            let proportional = Jitter.proportional(0.2).apply(to: .seconds(10), using: &generator)
            #expect(proportional >= .seconds(8) && proportional <= .seconds(10))
        }
        #expect(Jitter.full.apply(to: .seconds(-5), using: &generator) == .zero)
        #expect(Jitter.proportional(7).apply(to: .seconds(4), using: &generator) <= .seconds(4))
    }

    @Test func jitterActuallySpreadsDelays() {
        var generator = SystemRandomNumberGenerator()
        let delays = Set((0..<100).map { _ in Jitter.full.apply(to: .seconds(60), using: &generator) })
        #expect(delays.count > 90)
    }

    @Test func decorrelatedJitterStaysWithinItsBoundsAndGrows() {
        var generator = SystemRandomNumberGenerator()
        let backoff = Backoff(base: .seconds(1), multiplier: 2, maximum: .seconds(60), jitter: .none)
        var previous: Duration?
        var reachedCap = false
        for _ in 0..<2000 {
            let next = backoff.decorrelatedDelay(after: previous, using: &generator)
            #expect(next >= .seconds(1))
            #expect(next <= .seconds(60))
            #expect(next <= max(.seconds(1), (previous ?? .seconds(1)) * 3))
            if next > .seconds(45) { reachedCap = true }
            previous = next
        }
        #expect(reachedCap)
        // The first delay is within [base, 3 × base].
        for _ in 0..<200 {
            let first = backoff.decorrelatedDelay(after: nil, using: &generator)
            #expect(first >= .seconds(1) && first <= .seconds(3))
        }
        // A base above the cap is clamped to the cap.
        let odd = Backoff(base: .seconds(90), multiplier: 2, maximum: .seconds(30), jitter: .none)
        #expect(odd.decorrelatedDelay(after: .seconds(500), using: &generator) == .seconds(30))
    }

    @Test func theMessageRetryScheduleKeepsItsOrder() {
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...5 {
            let this = Backoff.messageRetry.delay(forAttempt: attempt, using: &generator)
            let next = Backoff.messageRetry.delay(forAttempt: attempt + 1, using: &generator)
            #expect(this < next)
        }
    }
}
