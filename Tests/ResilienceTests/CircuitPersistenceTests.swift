import Database
import FilaTestSupport
import Logging
import PostgresNIO
import Testing
@testable import Resilience

/// Transitions written to `circuit_transitions`, broadcast to other processes, and manual
/// overrides honoured, against a real Postgres.
@Suite struct CircuitPersistenceTests {
    struct Boom: Error, CustomStringConvertible {
        var description: String { "HTTP 500: Connection Closed" }
    }

    /// Runs `body` while `CircuitBreakerSync` runs for `registry`.
    func withSync<Result: Sendable>(
        url: DatabaseURL,
        client: PostgresClient,
        registry: CircuitBreakerRegistry,
        processID: String,
        _ body: () async throws -> Result
    ) async throws -> Result {
        let sync = CircuitBreakerSync(
            registry: registry, client: client, listenURL: url, processID: processID,
            overridePollInterval: .seconds(30), logger: TestDatabase.logger
        )
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await sync.run() }
            defer { group.cancelAll() }
            return try await body()
        }
    }

    /// Polls `condition` every 20 ms for up to 10 s.
    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<500 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting until \(what)")
    }

    func fail(_ breaker: CircuitBreaker, times: Int) async {
        for _ in 0..<times {
            do {
                try await breaker.execute { throw Boom() }
            } catch {
                // Expected: the operation's own error, or CircuitOpenError once open.
            }
        }
    }

    func rows(_ client: PostgresClient, _ sql: PostgresQuery) async throws -> [(String, String, String, String, Int32, Int32?, String?)] {
        var result: [(String, String, String, String, Int32, Int32?, String?)] = []
        for try await row in try await client.query(sql, logger: TestDatabase.logger)
            .decode((String, String, String, String, Int32, Int32?, String?).self) { result.append(row) }
        return result
    }

    @Test(.migratedDatabase) func everyTransitionIsARow() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let registry = CircuitBreakerRegistry(
                    defaultPolicy: .init(initialResetWait: .milliseconds(100)), logger: TestDatabase.logger
                )
                let breaker = registry.breaker(named: "evolution")
                try await withSync(url: url, client: client, registry: registry, processID: "host:1:a") {
                    await fail(breaker, times: 5)
                    #expect(breaker.state == .open)
                    try await Task.sleep(for: .milliseconds(150))
                    _ = try await breaker.execute { "probe ok" }
                    #expect(breaker.state == .closed)
                    try await eventually("three transitions are written") {
                        try await rows(client, "SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id FROM circuit_transitions").count == 3
                    }
                }
                let written = try await rows(client, """
                    SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id
                      FROM circuit_transitions ORDER BY id
                    """)
                #expect(written.map { "\($0.1)->\($0.2)" } == ["CLOSED->OPEN", "OPEN->HALF_OPEN", "HALF_OPEN->CLOSED"])
                #expect(written.allSatisfy { $0.0 == "evolution" && $0.6 == "host:1:a" })
                #expect(written[0].4 == 5)
                #expect(written[0].5 == 1)  // 100 ms, rounded up to whole seconds
                #expect(written[0].3.contains("5 consecutive failures; last: HTTP 500: Connection Closed"))
                #expect(written[2].3 == "probe succeeded")
            }

    /// A batch written again (its first write committed, but the answer came too late and the
    /// writer kept it to retry) adds no row and broadcasts no opening again.
    @Test(.migratedDatabase) func aRetriedWriteRecordsEachTransitionOnce() async throws {
        let client = try TestDatabase.current.client
        let log = CircuitTransitionLog()
        let items = [
            CircuitTransitionLog.Item(CircuitTransition(
                circuit: "evolution", from: .closed, to: .open, reason: "5 failures", consecutiveFailures: 5,
                openFor: .seconds(60), isLocal: true, at: .now
            )),
            CircuitTransitionLog.Item(CircuitTransition(
                circuit: "zapi", from: .closed, to: .open, reason: "5 failures", consecutiveFailures: 5,
                openFor: .seconds(60), isLocal: true, at: .now
            )),
        ]
        let openings = try await TestDatabase.current.url.withConnection(logger: TestDatabase.logger) { listener in
            try await listener.listen(on: CircuitTransitionLog.channel) { notifications in
                try await log.write(items: items, processID: "host:1:a", client: client, logger: TestDatabase.logger)
                try await log.write(items: items, processID: "host:1:a", client: client, logger: TestDatabase.logger)
                // A new transition in a batch with an old one: only it is added.
                let later = CircuitTransitionLog.Item(CircuitTransition(
                    circuit: "evolution", from: .open, to: .halfOpen, reason: "probe", consecutiveFailures: 0,
                    openFor: nil, isLocal: true, at: .now
                ))
                try await log.write(items: [items[0], later], processID: "host:1:a", client: client, logger: TestDatabase.logger)
                // Notifications arrive in commit order: every broadcast precedes the marker.
                _ = try await client.query("SELECT pg_notify(\(CircuitTransitionLog.channel), 'end of test')", logger: TestDatabase.logger).collect()
                var openings: [String] = []
                for try await notification in notifications {
                    if notification.payload == "end of test" { break }
                    openings.append(notification.payload)
                }
                return openings
            }
        }
        #expect(openings.count == 2, "\(openings)")
        let written = try await rows(client, """
            SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id
              FROM circuit_transitions ORDER BY id
            """)
        #expect(written.map { "\($0.0) \($0.1)->\($0.2)" } == ["evolution CLOSED->OPEN", "zapi CLOSED->OPEN", "evolution OPEN->HALF_OPEN"])
        let ids = try await client.query("SELECT count(DISTINCT transition_id)::int8 FROM circuit_transitions", logger: TestDatabase.logger)
            .collect().first?.decode(Int.self)
        #expect(ids == 3)
    }

    @Test(.migratedDatabase) func aFailedWriteNeverReachesTheCaller() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let registry = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let breaker = registry.breaker(named: "evolution")
                // The table is gone: every write fails.
                try await client.query("DROP TABLE circuit_transitions CASCADE", logger: TestDatabase.logger)
                try await withSync(url: url, client: client, registry: registry, processID: "host:1:a") {
                    for attempt in 1...7 {
                        do {
                            try await breaker.execute { throw Boom() }
                            Issue.record("the operation's error should be rethrown")
                        } catch let error as Boom {
                            #expect(attempt <= 5, "\(error)")
                        } catch let error as CircuitOpenError {
                            #expect(attempt > 5)
                            #expect(error.state == .open)
                        }
                    }
                    #expect(breaker.state == .open)
                    // The transition is kept for a later write, not lost (between two tries it
                    // is back in the queue).
                    try await eventually("the failed transition is queued again") { registry.transitions.pendingCount == 1 }
                }
            }

    @Test(.migratedDatabase) func anOpenInOneProcessOpensTheOthers() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let first = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let second = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let third = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let mine = first.breaker(named: "evolution")
                let theirs = second.breaker(named: "evolution")
                let unrelated = third.breaker(named: "zapi")
                // The opener is a live process: a follower whose LISTEN connection comes up
                // after the broadcast still catches up from its row.
                try await client.query(
                    "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('host:1:a', 'worker', 'host', 1, 'test')",
                    logger: TestDatabase.logger
                )
                try await withSync(url: url, client: client, registry: first, processID: "host:1:a") {
                    try await withSync(url: url, client: client, registry: second, processID: "host:2:b") {
                        try await withSync(url: url, client: client, registry: third, processID: "host:3:c") {
                            await fail(mine, times: 5)
                            try await eventually("the second process's breaker opens") { theirs.state == .open }
                            // The follower does not call while open.
                            await #expect(throws: CircuitOpenError.self) { () async throws in
                                try await theirs.execute { "never called" }
                            }
                            #expect(unrelated.state == .closed)
                            try await eventually("both processes' transitions are written") {
                                try await rows(client, "SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id FROM circuit_transitions").count == 2
                            }
                        }
                    }
                }
                let written = try await rows(client, """
                    SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id
                      FROM circuit_transitions ORDER BY id
                    """)
                #expect(written.map(\.6) == ["host:1:a", "host:2:b"])
                #expect(written[1].3.hasPrefix("opened by host:1:a: 5 consecutive failures"))
                // It follows for what is left of the first one's wait: never longer, jittered
                // shorter so followers do not all probe at once, and shorter again by however
                // long the follower took to read the row (on a loaded machine, 20 s and more),
                // so only the upper bound is the rule. And it never echoes back.
                #expect((1...60).contains(written[1].5 ?? 0), "\(String(describing: written[1].5))")
                #expect(mine.state == .open)
            }

    /// A process that starts during an outage opens at once, for what is left of the wait.
    @Test(.migratedDatabase) func aLateStarterFollowsCircuitsAlreadyOpen() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                try await client.query(
                    """
                    INSERT INTO worker_heartbeats (id, kind, host, pid, version)
                    VALUES ('host:1:a', 'worker', 'host', 1, 'test'), ('host:3:c', 'worker', 'host', 3, 'test')
                    """,
                    logger: TestDatabase.logger
                )
                // host:1:a opened evolution 10 s ago for 60 s, and zapi 100 s ago for 60 s
                // (over); host:3:c followed it, and its own row must not be taken as a source.
                try await client.query(
                    """
                    INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id, created_at)
                    VALUES ('evolution', 'CLOSED', 'OPEN', '5 consecutive failures', 5, 60, 'host:1:a', now() - interval '10 seconds'),
                           ('evolution', 'CLOSED', 'OPEN', 'opened by host:1:a: 5 consecutive failures', 0, 60, 'host:3:c', now() - interval '9 seconds'),
                           ('zapi', 'CLOSED', 'OPEN', '5 consecutive failures', 5, 60, 'host:1:a', now() - interval '100 seconds')
                    """,
                    logger: TestDatabase.logger
                )
                let registry = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let evolution = registry.breaker(named: "evolution")
                let zapi = registry.breaker(named: "zapi")
                let sync = CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "host:2:b", logger: TestDatabase.logger)
                await sync.followOpenCircuits()
                #expect(evolution.state == .open)
                #expect(zapi.state == .closed)
                guard case .unavailable(.open, let remaining) = evolution.readiness() else {
                    Issue.record("evolution should be open, not \(evolution.readiness())")
                    return
                }
                // What is left of the wait (50 s), less jitter and the time this took on a
                // loaded machine.
                #expect(remaining > .seconds(20) && remaining <= .seconds(50))

                // Once host:1:a closes it again, a newcomer no longer follows.
                try await client.query(
                    """
                    INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, worker_id)
                    VALUES ('evolution', 'OPEN', 'HALF_OPEN', 'reset wait passed', 'host:1:a')
                    """,
                    logger: TestDatabase.logger
                )
                let newcomer = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let theirs = newcomer.breaker(named: "evolution")
                await CircuitBreakerSync(registry: newcomer, client: client, listenURL: url, processID: "host:4:d", logger: TestDatabase.logger).followOpenCircuits()
                #expect(theirs.state == .closed)
            }

    @Test(.migratedDatabase) func overridesReachEveryReplicaAndCanBeLifted() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let first = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let second = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let breakers = [first.breaker(named: "evolution"), second.breaker(named: "evolution")]
                let other = first.breaker(named: "zapi")
                try await withSync(url: url, client: client, registry: first, processID: "host:1:a") {
                    try await withSync(url: url, client: client, registry: second, processID: "host:2:b") {
                        try await Task.sleep(for: .milliseconds(300))
                        try await client.query(
                            "SELECT ops.force_circuit('evolution', 'FORCED_OPEN', 'Evolution maintenance window', interval '2 hours')",
                            logger: TestDatabase.logger
                        )
                        try await eventually("every replica is forced open") { breakers.allSatisfy { $0.state == .forcedOpen } }
                        #expect(other.state == .closed)
                        await #expect(throws: CircuitOpenError.self) { () async throws in
                            try await breakers[0].execute { "never called" }
                        }

                        let statuses = try await CircuitReport.currentStates(client: client, logger: TestDatabase.logger)
                        #expect(statuses.first { $0.circuit == "evolution" }?.override == .forcedOpen)
                        #expect(statuses.first { $0.circuit == "evolution" }?.worstState == .forcedOpen)

                        try await client.query("SELECT ops.release_circuit('evolution')", logger: TestDatabase.logger)
                        try await eventually("every replica is handed back") { breakers.allSatisfy { $0.state == .closed } }
                        try await eventually("four replica transitions are written") {
                            try await rows(client, "SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id FROM circuit_transitions WHERE worker_id IS NOT NULL").count == 4
                        }
                    }
                }
                let records: [CircuitTransitionRecord] = try await CircuitReport.transitions(circuit: "evolution", hours: 24, client: client, logger: TestDatabase.logger)
                // The manual actions themselves are audit rows, with who did them.
                var audit: [CircuitTransitionRecord] = []
                for record in records where record.workerID == nil { audit.append(record) }
                #expect(audit.map { "\($0.from.rawValue)->\($0.to.rawValue)" }.sorted() == ["CLOSED->FORCED_OPEN", "FORCED_OPEN->CLOSED"])
                #expect(audit.contains { $0.reason.hasPrefix("override set by ") && $0.reason.contains(": Evolution maintenance window (until ") })
                #expect(audit.contains { $0.reason.hasPrefix("override released by ") })
                var replicas: [CircuitTransitionRecord] = []
                for record in records where record.workerID != nil { replicas.append(record) }
                #expect(replicas.count == 4)
                #expect(replicas.filter { $0.to == .forcedOpen }.allSatisfy { $0.reason.hasPrefix("override: Evolution maintenance window (set by ") })
                #expect(replicas.filter { $0.to == .closed }.allSatisfy { $0.reason == "override lifted" })
                #expect(Set(replicas.compactMap(\.workerID)) == ["host:1:a", "host:2:b"])
                #expect(try await CircuitReport.transitions(circuit: "zapi", hours: 24, client: client, logger: TestDatabase.logger).isEmpty)
            }

    @Test(.migratedDatabase) func anExpiredOverrideIsLiftedByThePoll() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let registry = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let breaker = registry.breaker(named: "evolution")
                // Already expired (created in the past): not in force.
                try await client.query(
                    """
                    INSERT INTO circuit_overrides (circuit_name, state, reason, created_at, expires_at)
                    VALUES ('evolution', 'FORCED_OPEN', 'old', now() - interval '2 hours', now() - interval '1 hour')
                    """,
                    logger: TestDatabase.logger
                )
                await CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "p", logger: TestDatabase.logger).reloadOverrides()
                #expect(breaker.state == .closed)
                try await client.query(
                    "UPDATE circuit_overrides SET expires_at = now() + interval '1 hour'",
                    logger: TestDatabase.logger
                )
                await CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "p", logger: TestDatabase.logger).reloadOverrides()
                #expect(breaker.state == .forcedOpen)
            }

    /// Waits until `count` sessions of this database are listening for circuit broadcasts,
    /// so that a NOTIFY sent next reaches them.
    func listeners(_ client: PostgresClient, count: Int) async throws {
        try await eventually("\(count) processes listen for circuit broadcasts") {
            var listening = 0
            for try await value in try await client.query(
                """
                SELECT count(*)::int8 FROM pg_stat_activity
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%fila_circuits%'
                """,
                logger: TestDatabase.logger
            ).decode(Int64.self) { listening = Int(value) }
            return listening >= count
        }
    }

    /// Anyone who can connect may NOTIFY (no privilege needed): a forged broadcast that would
    /// stop all sending for a day opens nothing, since no transition row backs it, while a
    /// real opening by another live worker, broadcast after it, is still followed.
    @Test(.migratedDatabase, .timeLimit(.minutes(3))) func aForgedBroadcastOpensNothing() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                try await client.query(
                    "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('host:1:a', 'worker', 'host', 1, 'test')",
                    logger: TestDatabase.logger
                )
                let opener = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let follower = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let theirZAPI = opener.breaker(named: "zapi")
                let evolution = follower.breaker(named: "evolution")
                let zapi = follower.breaker(named: "zapi")
                try await withSync(url: url, client: client, registry: opener, processID: "host:1:a") {
                    try await withSync(url: url, client: client, registry: follower, processID: "host:2:b") {
                        try await listeners(client, count: 2)
                        // Forged in the name of a live worker, for the longest wait there is.
                        try await client.query(
                            """
                            SELECT pg_notify('fila_circuits',
                                '{"kind":"open","circuit":"evolution","origin":"host:1:a","open_seconds":86400,"reason":"forged"}')
                            """,
                            logger: TestDatabase.logger
                        )
                        // Then a real opening: its row is written and broadcast by the opener.
                        await fail(theirZAPI, times: 5)
                        try await eventually("the follower follows the real opening") { zapi.state == .open }
                        // The forged broadcast arrived first and was handled first.
                        #expect(evolution.state == .closed)
                        _ = try await evolution.execute { "sent" }
                        try await eventually("the follower's transition is written") {
                            try await rows(client, "SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id FROM circuit_transitions WHERE worker_id = 'host:2:b'").count == 1
                        }
                    }
                }
                let followed = try await rows(client, """
                    SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id
                      FROM circuit_transitions WHERE worker_id = 'host:2:b' ORDER BY id
                    """)
                #expect(followed.map(\.0) == ["zapi"])
                #expect(followed.first.map { $0.3.hasPrefix("opened by host:1:a: 5 consecutive failures") } == true)
            }

    /// A transitions row may ask for any wait (a process configured otherwise, a row written
    /// by hand): a follower waits no longer than its own policy's maximum.
    @Test(.migratedDatabase) func aFollowedOpeningLastsNoLongerThanThePolicysMaximumWait() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                try await client.query(
                    """
                    INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('host:1:a', 'worker', 'host', 1, 'test');
                    """,
                    logger: TestDatabase.logger
                )
                try await client.query(
                    """
                    INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id)
                    VALUES ('evolution', 'CLOSED', 'OPEN', '5 consecutive failures', 5, 86400, 'host:1:a')
                    """,
                    logger: TestDatabase.logger
                )
                let registry = CircuitBreakerRegistry(
                    defaultPolicy: .init(initialResetWait: .seconds(30), maximumResetWait: .seconds(120)), logger: TestDatabase.logger
                )
                let evolution = registry.breaker(named: "evolution")
                await CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "host:2:b", logger: TestDatabase.logger)
                    .followOpenCircuits()
                guard case .unavailable(.open, let remaining) = evolution.readiness() else {
                    Issue.record("evolution should follow the opening, not \(evolution.readiness())")
                    return
                }
                #expect(remaining <= .seconds(120), "\(remaining)")
                #expect(remaining > .seconds(60), "\(remaining)")
            }

    /// A broadcast's payload is never believed, however it is made; malformed ones are ignored.
    @Test(.migratedDatabase) func aBroadcastPayloadIsNeverBelieved() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
                let registry = CircuitBreakerRegistry(logger: TestDatabase.logger)
                let breaker = registry.breaker(named: "evolution")
                let sync = CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "me", logger: TestDatabase.logger)
                await sync.handle(#"{"kind":"open","circuit":"evolution","origin":"x\u0000y","open_seconds":1e21,"reason":"a\u0000b"}"#)
                await sync.handle("not json")
                await sync.handle(#"{"kind":"open","circuit":"unknown-circuit","origin":"x","open_seconds":60}"#)
                #expect(breaker.state == .closed)
                // A transition with text cleaned from elsewhere can be written.
                try await sync.write([CircuitTransition(
                    circuit: "evolution", from: .closed, to: .open, reason: "opened by xy: ab", consecutiveFailures: 0,
                    openFor: .seconds(86_400 * 1000), isLocal: false, at: .now
                )])
            }

    @Test(.migratedDatabase) func forceCircuitRefusesBadInput() async throws {
        let client = try TestDatabase.current.client
                for sql: PostgresQuery in [
                    "SELECT ops.force_circuit('evolution', 'OPEN', 'x')",
                    "SELECT ops.force_circuit('evolution', 'FORCED_OPEN', '   ')",
                    "SELECT ops.force_circuit('Evolution API', 'FORCED_OPEN', 'x')",
                    "SELECT ops.force_circuit('evolution', 'FORCED_OPEN', 'x', interval '-1 hour')",
                ] {
                    await #expect(throws: (any Error).self) { () async throws in
                        _ = try await client.query(sql, logger: TestDatabase.logger).collect()
                    }
                }
                var count = 0
                for try await value in try await client.query("SELECT count(*)::int8 FROM circuit_overrides", logger: TestDatabase.logger).decode(Int64.self) {
                    count = Int(value)
                }
                #expect(count == 0)
                var released: Bool?
                for try await value in try await client.query("SELECT ops.release_circuit('evolution')", logger: TestDatabase.logger).decode(Bool.self) {
                    released = value
                }
                #expect(released == false)
            }

    @Test func timeoutsAndRecipientRejectionsDoNotOpen() async throws {
        struct Classified: ClassifiedError {
            let errorType: ErrorType
        }
        let registry = CircuitBreakerRegistry(logger: TestDatabase.logger)
        let breaker = registry.breaker(named: "evolution")
        for type in [ErrorType.timeout, .recipient, .cancelled] {
            for _ in 0..<10 {
                _ = try? await breaker.execute { throw Classified(errorType: type) }
            }
            #expect(breaker.state == .closed, "\(type)")
        }
        // Not counted either way: four failures, a recipient rejection, and the fifth
        // failure still opens it.
        for _ in 0..<4 { _ = try? await breaker.execute { throw Classified(errorType: .serverError) } }
        _ = try? await breaker.execute { throw Classified(errorType: .recipient) }
        #expect(breaker.consecutiveFailures == 4)
        _ = try? await breaker.execute { throw Classified(errorType: .network) }
        #expect(breaker.state == .open)

        // Every counted kind counts.
        for type in [ErrorType.network, .serverError, .clientError, .unknown] {
            let fresh = CircuitBreakerRegistry(logger: TestDatabase.logger).breaker(named: "zapi")
            for _ in 0..<5 { _ = try? await fresh.execute { throw Classified(errorType: type) } }
            #expect(fresh.state == .open, "\(type)")
        }
    }

    @Test func classificationTable() {
        #expect(ErrorType.timeout.classification == .ignored)
        #expect(ErrorType.cancelled.classification == .ignored)
        #expect(ErrorType.recipient.classification == .ignored)
        for type in [ErrorType.network, .serverError, .clientError, .unknown] {
            #expect(type.classification == .failure)
        }
        for (status, type) in [(500, ErrorType.serverError), (502, .serverError), (503, .serverError), (401, .clientError), (403, .clientError), (404, .clientError), (429, .clientError), (400, .clientError), (302, .unknown)] {
            #expect(ErrorType.forHTTPStatus(status) == type)
        }
        #expect(ErrorClassifier.standard.classify(CancellationError()) == .cancelled)
        #expect(ErrorClassifier.standard.classify(Boom()) == .unknown)
    }
}
