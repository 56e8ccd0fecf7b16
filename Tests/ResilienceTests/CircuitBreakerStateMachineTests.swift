import Testing
@testable import Resilience

/// The breaker's logic alone, with time as a parameter: every transition, the backoff
/// sequence, probe admission and the forced states.
@Suite struct CircuitBreakerStateMachineTests {
    typealias Machine = CircuitBreakerStateMachine
    let start = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .seconds(seconds) }

    /// Admits a call at `time` and records `result` for it.
    @discardableResult
    func call(_ machine: inout Machine, _ result: Machine.CallResult, at time: Double) -> [CircuitTransition] {
        let (permission, opened) = machine.acquire(now: at(time))
        guard case .permitted(let ticket) = permission else {
            Issue.record("call at \(time) s was rejected in \(machine.state)")
            return opened
        }
        return opened + machine.record(result, for: ticket, now: at(time))
    }

    func opened(after failures: Int = 5, policy: CircuitBreakerPolicy = .init()) -> Machine {
        var machine = Machine(circuit: "evolution", policy: policy)
        for _ in 0..<failures { call(&machine, .failure(detail: "HTTP 500"), at: 0) }
        return machine
    }

    @Test func opensAfterFiveConsecutiveFailures() {
        var machine = Machine(circuit: "evolution", policy: .init())
        for attempt in 1...4 {
            #expect(call(&machine, .failure(detail: "HTTP 500"), at: 0).isEmpty)
            #expect(machine.consecutiveFailures == attempt)
        }
        let transitions = call(&machine, .failure(detail: "HTTP 500: Connection Closed"), at: 0)
        #expect(machine.state == .open)
        #expect(transitions.count == 1)
        #expect(transitions.first?.from == .closed)
        #expect(transitions.first?.to == .open)
        #expect(transitions.first?.consecutiveFailures == 5)
        #expect(transitions.first?.openFor == .seconds(60))
        #expect(transitions.first?.isLocal == true)
        #expect(transitions.first?.reason.contains("5 consecutive failures") == true)
        #expect(transitions.first?.reason.contains("Connection Closed") == true)
    }

    @Test func aSuccessResetsTheCount() {
        var machine = Machine(circuit: "evolution", policy: .init())
        for _ in 0..<4 { call(&machine, .failure(detail: "x"), at: 0) }
        call(&machine, .success, at: 0)
        #expect(machine.consecutiveFailures == 0)
        for _ in 0..<4 { call(&machine, .failure(detail: "x"), at: 0) }
        #expect(machine.state == .closed)
    }

    @Test func ignoredResultsNeitherCountNorReset() {
        var machine = Machine(circuit: "evolution", policy: .init())
        for _ in 0..<4 { call(&machine, .failure(detail: "x"), at: 0) }
        for _ in 0..<10 { call(&machine, .ignored, at: 0) }
        #expect(machine.state == .closed)
        #expect(machine.consecutiveFailures == 4)
        call(&machine, .failure(detail: "x"), at: 0)
        #expect(machine.state == .open)
    }

    @Test func openRejectsUntilTheWaitPassesThenHalfOpensLazily() {
        var machine = opened()
        let (early, none) = machine.acquire(now: at(59))
        #expect(none.isEmpty)
        #expect(early == .rejected(state: .open, retryAfter: .seconds(1)))
        #expect(machine.readiness(now: at(59)) == .unavailable(state: .open, retryAfter: .seconds(1)))
        // Readiness changes nothing: still OPEN until a call comes.
        #expect(machine.readiness(now: at(60)) == .available(limit: 1))
        #expect(machine.state == .open)
        let (permission, transitions) = machine.acquire(now: at(60))
        guard case .permitted(let ticket) = permission else {
            Issue.record("the probe was not admitted")
            return
        }
        #expect(ticket.isProbe)
        #expect(machine.state == .halfOpen)
        #expect(transitions.map(\.to) == [.halfOpen])
        #expect(transitions.first?.from == .open)
    }

    @Test func halfOpenAdmitsOnlyTheConfiguredProbes() {
        var machine = opened(policy: .init(halfOpenProbes: 2))
        let (first, _) = machine.acquire(now: at(60))
        let (second, _) = machine.acquire(now: at(60))
        let (third, _) = machine.acquire(now: at(60))
        guard case .permitted(let one) = first, case .permitted(let two) = second else {
            Issue.record("two probes should be admitted")
            return
        }
        #expect(third == .rejected(state: .halfOpen, retryAfter: Machine.probeRecheck))
        #expect(machine.readiness(now: at(60)) == .unavailable(state: .halfOpen, retryAfter: Machine.probeRecheck))
        // One success is not enough with two probes.
        #expect(machine.record(.success, for: one, now: at(61)).isEmpty)
        #expect(machine.state == .halfOpen)
        let closed = machine.record(.success, for: two, now: at(61))
        #expect(closed.map(\.to) == [.closed])
        #expect(closed.first?.reason == "2 probes succeeded")
        #expect(machine.state == .closed)
    }

    @Test func anIgnoredProbeFreesItsSlot() {
        var machine = opened()
        let (first, _) = machine.acquire(now: at(60))
        guard case .permitted(let probe) = first else {
            Issue.record("probe not admitted")
            return
        }
        #expect(machine.acquire(now: at(60)).0 == .rejected(state: .halfOpen, retryAfter: Machine.probeRecheck))
        #expect(machine.record(.ignored, for: probe, now: at(61)).isEmpty)
        #expect(machine.state == .halfOpen)
        guard case .permitted = machine.acquire(now: at(61)).0 else {
            Issue.record("a new probe should be admitted after a timed-out one")
            return
        }
    }

    /// T02.2: 60, 120, 240, 480, 600, 600 … and back to 60 after a successful probe.
    @Test func resetWaitDoublesAfterEachFailedProbeUpToTheMaximum() {
        var machine = opened()
        var now = 0.0
        var waits: [Duration] = [.seconds(60)]
        for _ in 0..<6 {
            now += waits.last!.seconds
            let transitions = call(&machine, .failure(detail: "still down"), at: now)
            #expect(transitions.map(\.to) == [.halfOpen, .open])
            waits.append(transitions.last!.openFor!)
        }
        #expect(waits == [60, 120, 240, 480, 600, 600, 600].map { Duration.seconds($0) })
        #expect(machine.failedProbes == 6)
        // Still rejected one second before the last wait ends.
        #expect(machine.acquire(now: at(now + 599)).0 == .rejected(state: .open, retryAfter: .seconds(1)))
        now += 600
        let recovered = call(&machine, .success, at: now)
        #expect(recovered.map(\.to) == [.halfOpen, .closed])
        #expect(machine.failedProbes == 0)
        // The next opening waits the initial 60 s again.
        for _ in 0..<5 { call(&machine, .failure(detail: "x"), at: now) }
        #expect(machine.state == .open)
        #expect(machine.acquire(now: at(now + 59)).0 == .rejected(state: .open, retryAfter: .seconds(1)))
    }

    @Test func policyResetWaitSequence() {
        let policy = CircuitBreakerPolicy(initialResetWait: .seconds(60), resetMultiplier: 2, maximumResetWait: .seconds(600))
        #expect((0...6).map { policy.resetWait(afterFailedProbes: $0) } == [60, 120, 240, 480, 600, 600, 600].map { Duration.seconds($0) })
        let slow = CircuitBreakerPolicy(initialResetWait: .seconds(10), resetMultiplier: 1.5, maximumResetWait: .seconds(30))
        #expect((0...4).map { slow.resetWait(afterFailedProbes: $0) } == [10, 15, 22.5, 30, 30].map { Duration.seconds($0) })
    }

    @Test func aResultFromBeforeATransitionIsDisregarded() {
        var machine = Machine(circuit: "evolution", policy: .init())
        // A slow call admitted while CLOSED …
        guard case .permitted(let slow) = machine.acquire(now: at(0)).0 else {
            Issue.record("not admitted")
            return
        }
        for _ in 0..<5 { call(&machine, .failure(detail: "x"), at: 1) }
        #expect(machine.state == .open)
        // … that succeeds after the breaker opened does not close it.
        #expect(machine.record(.success, for: slow, now: at(2)).isEmpty)
        #expect(machine.state == .open)
        // Nor does a late failure count into the half-open state that follows.
        guard case .permitted(let probe) = machine.acquire(now: at(61)).0 else {
            Issue.record("probe not admitted")
            return
        }
        #expect(machine.record(.failure(detail: "late"), for: slow, now: at(61)).isEmpty)
        #expect(machine.state == .halfOpen)
        #expect(machine.record(.success, for: probe, now: at(62)).map(\.to) == [.closed])
    }

    @Test func failureRateOpensOnlyOnceEnoughCallsWereSeen() {
        let policy = CircuitBreakerPolicy(
            consecutiveFailures: 100,
            failureRate: .init(threshold: 0.5, window: .seconds(60), minimumCalls: 10)
        )
        var machine = Machine(circuit: "zapi", policy: policy)
        // Alternating: 50 % failures, but fewer than 10 calls so far.
        for index in 0..<9 {
            call(&machine, index.isMultiple(of: 2) ? .failure(detail: "x") : .success, at: Double(index))
        }
        #expect(machine.state == .closed)
        // The 10th call (a failure) makes 6 of 10, over the threshold: it opens.
        let transitions = call(&machine, .failure(detail: "HTTP 503"), at: 9)
        #expect(transitions.map(\.to) == [.open])
        #expect(transitions.first?.reason.hasPrefix("failure rate 60% over 10 calls in 60 s; last: HTTP 503") == true)
    }

    @Test func failureRateAtExactlyTheThresholdOpens() {
        let policy = CircuitBreakerPolicy(
            consecutiveFailures: 100,
            failureRate: .init(threshold: 0.5, window: .seconds(60), minimumCalls: 4)
        )
        var machine = Machine(circuit: "zapi", policy: policy)
        call(&machine, .success, at: 0)
        call(&machine, .failure(detail: "x"), at: 1)
        call(&machine, .success, at: 2)
        #expect(call(&machine, .failure(detail: "x"), at: 3).map(\.to) == [.open])
    }

    @Test func failureRateForgetsCallsOutsideTheWindow() {
        let policy = CircuitBreakerPolicy(
            consecutiveFailures: 100,
            failureRate: .init(threshold: 0.5, window: .seconds(10), minimumCalls: 4)
        )
        var machine = Machine(circuit: "zapi", policy: policy)
        for _ in 0..<3 { call(&machine, .failure(detail: "x"), at: 0) }
        // 20 s later the old failures are gone: 1 failure in 3 calls.
        call(&machine, .success, at: 20)
        call(&machine, .success, at: 20)
        call(&machine, .failure(detail: "x"), at: 20)
        #expect(machine.state == .closed)
    }

    @Test func forcedOpenRejectsEverythingAndCountsNothing() {
        var machine = Machine(circuit: "evolution", policy: .init())
        let forced = machine.applyOverride(.forcedOpen, reason: "maintenance (set by ops)", now: at(0))
        #expect(forced.map(\.to) == [.forcedOpen])
        #expect(forced.first?.reason == "override: maintenance (set by ops)")
        #expect(forced.first?.isLocal == false)
        #expect(machine.acquire(now: at(10_000)).0 == .rejected(state: .forcedOpen, retryAfter: .seconds(60)))
        #expect(machine.readiness(now: at(0)) == .unavailable(state: .forcedOpen, retryAfter: .seconds(60)))
        // Applying the same override again is not a transition.
        #expect(machine.applyOverride(.forcedOpen, reason: "maintenance", now: at(1)).isEmpty)
        let lifted = machine.applyOverride(nil, reason: "", now: at(2))
        #expect(lifted.map(\.to) == [.closed])
        #expect(lifted.first?.from == .forcedOpen)
        #expect(machine.state == .closed)
    }

    @Test func forcedClosedAdmitsEverythingAndNeverOpens() {
        var machine = opened()
        #expect(machine.applyOverride(.forcedClosed, reason: "Evolution is fine, the checks lie", now: at(1)).map(\.to) == [.forcedClosed])
        for _ in 0..<50 { call(&machine, .failure(detail: "x"), at: 2) }
        #expect(machine.state == .forcedClosed)
        #expect(machine.readiness(now: at(2)) == .available(limit: nil))
        // Lifting it starts afresh: four failures do not open it.
        #expect(machine.applyOverride(nil, reason: "", now: at(3)).map(\.to) == [.closed])
        for _ in 0..<4 { call(&machine, .failure(detail: "x"), at: 3) }
        #expect(machine.state == .closed)
    }

    @Test func anOverrideCanSwitchDirectly() {
        var machine = Machine(circuit: "evolution", policy: .init())
        _ = machine.applyOverride(.forcedOpen, reason: "a", now: at(0))
        let switched = machine.applyOverride(.forcedClosed, reason: "b", now: at(1))
        #expect(switched.map { "\($0.from.rawValue)->\($0.to.rawValue)" } == ["FORCED_OPEN->FORCED_CLOSED"])
        // Non-override states are not overrides.
        #expect(machine.applyOverride(.open, reason: "c", now: at(2)).isEmpty)
    }

    @Test func anOverrideTakesAHalfOpenBreakerAndItsProbeResultIsDisregarded() {
        var machine = opened()
        guard case .permitted(let probe) = machine.acquire(now: at(60)).0 else {
            Issue.record("probe not admitted")
            return
        }
        let forced = machine.applyOverride(.forcedOpen, reason: "x", now: at(61))
        #expect(forced.map { "\($0.from.rawValue)->\($0.to.rawValue)" } == ["HALF_OPEN->FORCED_OPEN"])
        #expect(machine.record(.success, for: probe, now: at(62)).isEmpty)
        #expect(machine.state == .forcedOpen)
        // Lifted: CLOSED, and the next opening waits the initial 60 s.
        #expect(machine.applyOverride(nil, reason: "", now: at(63)).map(\.to) == [.closed])
        #expect(machine.failedProbes == 0)
    }

    @Test func oneFailedProbeReopensAndTheOtherProbesLateResultIsDisregarded() {
        var machine = opened(policy: .init(halfOpenProbes: 2))
        guard case .permitted(let first) = machine.acquire(now: at(60)).0,
              case .permitted(let second) = machine.acquire(now: at(60)).0
        else {
            Issue.record("two probes should be admitted")
            return
        }
        #expect(machine.record(.failure(detail: "still down"), for: first, now: at(61)).map(\.to) == [.open])
        // The second probe succeeds afterwards: it cannot close the re-opened breaker.
        #expect(machine.record(.success, for: second, now: at(62)).isEmpty)
        #expect(machine.state == .open)
        #expect(machine.acquire(now: at(61 + 119)).0 == .rejected(state: .open, retryAfter: .seconds(1)))
    }

    @Test func everyTransitionCarriesItsTime() {
        var machine = Machine(circuit: "evolution", policy: .init())
        let transitions = (0..<5).flatMap { call(&machine, .failure(detail: "x"), at: Double($0)) }
        #expect(transitions.map(\.at) == [at(4)])
    }

    @Test func aRemoteOpenOpensAClosedBreakerOnly() {
        var machine = Machine(circuit: "evolution", policy: .init())
        let followed = machine.followRemoteOpen(openFor: .seconds(120), reason: "opened by host:1:a", now: at(0))
        #expect(followed.map(\.to) == [.open])
        #expect(followed.first?.isLocal == false)
        #expect(followed.first?.openFor == .seconds(120))
        #expect(machine.acquire(now: at(119)).0 == .rejected(state: .open, retryAfter: .seconds(1)))
        // Already open: nothing more.
        #expect(machine.followRemoteOpen(openFor: .seconds(600), reason: "again", now: at(1)).isEmpty)
        // A remote opening does not lengthen the next local wait.
        #expect(machine.failedProbes == 0)

        var forced = Machine(circuit: "evolution", policy: .init())
        _ = forced.applyOverride(.forcedClosed, reason: "x", now: at(0))
        #expect(forced.followRemoteOpen(openFor: .seconds(60), reason: "y", now: at(0)).isEmpty)
        #expect(forced.state == .forcedClosed)

        var probing = opened()
        _ = probing.acquire(now: at(60))
        #expect(probing.state == .halfOpen)
        #expect(probing.followRemoteOpen(openFor: .seconds(60), reason: "z", now: at(60)).isEmpty)
    }

    @Test func resultsUnderAnOverrideAreNotCounted() {
        var machine = Machine(circuit: "evolution", policy: .init())
        guard case .permitted(let before) = machine.acquire(now: at(0)).0 else {
            Issue.record("not admitted")
            return
        }
        _ = machine.applyOverride(.forcedClosed, reason: "x", now: at(0))
        #expect(machine.record(.failure(detail: "x"), for: before, now: at(1)).isEmpty)
        #expect(machine.consecutiveFailures == 0)
    }
}
