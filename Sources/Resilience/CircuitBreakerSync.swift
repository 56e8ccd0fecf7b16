import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle

/// Connects a process's breakers to the others' through Postgres:
///
/// - writes every transition to `circuit_transitions`, off the call path, in batches; a
///   failed write is logged once and retried, never thrown at a caller (seed T02.1);
/// - broadcasts each OPEN this process decides with `NOTIFY fila_circuits`, and follows
///   another process's opening when its broadcast arrives, so one replica's discovery
///   spares the others five failed calls each. Anyone who can connect may NOTIFY, so a
///   broadcast is only a wake-up: what is followed is read from `circuit_transitions`
///   (writing there takes INSERT rights), openings of live processes only, and never for
///   longer than this process's own policy would wait (`maximumResetWait`);
/// - applies the manual overrides in `circuit_overrides` as soon as they change (the
///   table's trigger notifies) and every `overridePollInterval` in case a notification
///   was lost or an override expired.
///
/// The LISTEN connection is dedicated (`url`), like the queue listener's.
public struct CircuitBreakerSync: Service {
    public static let channel = "fila_circuits"

    let registry: CircuitBreakerRegistry
    let client: PostgresClient
    let url: DatabaseURL
    let processID: String
    let overridePollInterval: Duration
    let logger: Logger
    /// Set by each broadcast of an opening; bursts collapse into one read of the table.
    private let openings = WakeSignal()

    public init(
        registry: CircuitBreakerRegistry,
        client: PostgresClient,
        listenURL: DatabaseURL,
        processID: String,
        overridePollInterval: Duration = .seconds(5),
        logger: Logger
    ) {
        self.registry = registry
        self.client = client
        self.url = listenURL
        self.processID = processID
        self.overridePollInterval = overridePollInterval
        self.logger = logger
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await cancelWhenGracefulShutdown { await self.listen() } }
            group.addTask { await cancelWhenGracefulShutdown { await self.pollOverrides() } }
            group.addTask { await cancelWhenGracefulShutdown { await self.followBroadcastOpenings() } }
            group.addTask { await self.writeTransitions() }
        }
    }

    // MARK: - Writing and broadcasting transitions

    private func writeTransitions() async {
        // Shutdown wakes the loop, which then writes what is left, once, and returns.
        await withGracefulShutdownHandler {
            var waiter = registry.written.makeWaiter()
            var failures = 0
            while true {
                let shuttingDown = Task.isShuttingDownGracefully || Task.isCancelled
                let (items, dropped) = registry.takePending()
                if dropped > 0 {
                    logger.error("circuit transitions dropped while Postgres was unreachable", metadata: ["circuit.dropped": .stringConvertible(dropped)])
                }
                if !items.isEmpty {
                    do {
                        try await withTimeLimit(.seconds(10), onTimeout: { DatabaseError(.queryFailed, "writing circuit transitions: no answer within 10 s") }) {
                            try await self.write(items)
                        }
                        if failures > 0 { logger.info("circuit transitions written again") }
                        failures = 0
                    } catch {
                        registry.restore(items)
                        failures += 1
                        if failures == 1 {
                            logger.error("writing circuit transitions failed; keeping them and retrying", metadata: ["error": .string(String(reflecting: error))])
                        }
                        if shuttingDown { return }
                        let delay = Backoff(base: .milliseconds(200), multiplier: 2, maximum: .seconds(10), jitter: .full).delay(forAttempt: failures)
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                        continue
                    }
                }
                if shuttingDown { return }
                guard await waiter.next() != nil else { return }
            }
        } onGracefulShutdown: {
            registry.written.signal()
        }
    }

    /// Inserts the rows and, in the same transaction, notifies this process's openings
    /// (delivered at commit, so a receiver can already read the row).
    func write(_ transitions: [CircuitTransition]) async throws {
        // A row's time is when the change happened, not when it could be written (after a
        // Postgres outage, say): the database's clock, read once an hour, plus how long after
        // that reading it happened by this process's monotonic clock. So one process's rows
        // are timed in the order they happened. Broadcasts carry what is left of the wait.
        let writtenAt = ContinuousClock.now
        let broadcasts = transitions.filter { $0.isLocal && $0.to == .open }
        do {
            try await client.withTransaction(logger: logger) { connection in
                let anchor = try await clockAnchor(connection)
                let times = transitions.map { anchor.epoch + ($0.at - anchor.instant).seconds }
                try await connection.query(
                    """
                    INSERT INTO circuit_transitions
                        (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id, created_at)
                    SELECT c, f, t, r, n, nullif(o, -1), \(processID), to_timestamp(happened)
                      FROM unnest(\(transitions.map(\.circuit))::text[], \(transitions.map(\.from.rawValue))::text[],
                                  \(transitions.map(\.to.rawValue))::text[], \(transitions.map(\.reason))::text[],
                                  \(transitions.map { Int32(clamping: $0.consecutiveFailures) })::int4[],
                                  \(transitions.map { $0.openFor.map(Self.wholeSeconds) ?? -1 })::int4[],
                                  \(times)::float8[])
                           WITH ORDINALITY AS x(c, f, t, r, n, o, happened, position)
                     ORDER BY position
                    """,
                    logger: logger
                )
                guard !broadcasts.isEmpty else { return }
                try await connection.query(
                    """
                    SELECT pg_notify(\(Self.channel), json_build_object(
                               'kind', 'open', 'circuit', c, 'origin', \(processID), 'open_seconds', o, 'reason', r)::text)
                      FROM unnest(\(broadcasts.map(\.circuit))::text[],
                                  \(broadcasts.map { Self.wholeSeconds(max(.seconds(1), ($0.openFor ?? .seconds(60)) - (writtenAt - $0.at))) })::int4[],
                                  \(broadcasts.map(\.reason))::text[]) AS x(c, o, r)
                    """,
                    logger: logger
                )
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "writing circuit transitions failed")
        }
    }

    /// The database clock (seconds since the epoch) at a monotonic instant; read again
    /// when over an hour old, so drift between the two clocks stays negligible.
    private func clockAnchor(_ connection: PostgresConnection) async throws -> (epoch: Double, instant: ContinuousClock.Instant) {
        if let anchor = registry.clockAnchor.withLock({ $0 }), ContinuousClock.now - anchor.instant < .seconds(3600) {
            return anchor
        }
        let sent = ContinuousClock.now
        var epoch = 0.0
        for try await value in try await connection.query("SELECT extract(epoch FROM clock_timestamp())::float8", logger: logger).decode(Double.self) {
            epoch = value
        }
        // The reading was taken somewhere during the round trip: take its middle.
        let received = ContinuousClock.now
        let anchor = (epoch: epoch, instant: sent + (received - sent) / 2)
        registry.clockAnchor.withLock { $0 = anchor }
        return anchor
    }

    static func wholeSeconds(_ duration: Duration) -> Int32 {
        Int32(min(max(0, duration.seconds.rounded(.up)), 86_400 * 365))
    }

    // MARK: - Other replicas' openings and overrides

    private func listen() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await url.withConnection(logger: logger) { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        if failures > 0 { logger.info("listening for circuit broadcasts again") }
                        failures = 0
                        // Overrides may have changed, and other processes may have opened
                        // circuits, while this connection was away (or before this process
                        // started).
                        await reloadOverrides()
                        await followOpenCircuits()
                        for try await notification in notifications {
                            await handle(notification.payload)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if failures == 0 {
                    logger.warning(
                        "LISTEN connection for circuit broadcasts lost; reconnecting (overrides are still polled)",
                        metadata: ["error": .string(String(reflecting: error))]
                    )
                }
            }
            failures += 1
            let delay = Backoff(base: .milliseconds(250), multiplier: 2, maximum: .seconds(10), jitter: .proportional(0.5)).delay(forAttempt: failures)
            try? await Task.sleep(for: delay)
        }
    }

    /// A broadcast says only that something changed: overrides are re-read, and an opening
    /// wakes the reader of `circuit_transitions`. Nothing in the payload is believed (a
    /// forged `open_seconds: 86400` would otherwise stop all sending for a day).
    func handle(_ payload: String) async {
        guard let message = JSONValue(parsing: payload), case .string(let kind)? = message["kind"] else {
            logger.warning("ignoring a malformed circuit broadcast", metadata: ["payload": .string(CircuitBreaker.oneLine(payload, limit: 200))])
            return
        }
        switch kind {
        case "override":
            await reloadOverrides()
        case "open":
            openings.signal()
        default:
            break
        }
    }

    /// Follows what the table says each time a broadcast of an opening arrives, at most ten
    /// times a second however many arrive (a flood of NOTIFYs costs a few reads, no more).
    private func followBroadcastOpenings() async {
        var waiter = openings.makeWaiter()
        while await waiter.next() != nil {
            await followOpenCircuits()
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Opens this process's breakers that another live process holds OPEN right now, for
    /// what is left of that process's wait: a worker that starts (or reconnects) in the
    /// middle of an outage does not have to find it out with failed calls of its own.
    public func followOpenCircuits() async {
        do {
            let open = try await withTimeLimit(.seconds(10), onTimeout: { DatabaseError(.queryFailed, "reading open circuits: no answer within 10 s") }) {
                try await CircuitReport.openElsewhere(excluding: processID, client: client, logger: logger)
            }
            for circuit in open {
                guard let breaker = registry.existing(named: circuit.circuit) else { continue }
                // A row may ask for any wait (a process configured otherwise, or a row written
                // by hand): this process waits no longer than its own policy ever would.
                breaker.followRemoteOpen(
                    openFor: Jitter.proportional(0.2).apply(to: min(circuit.remaining, breaker.policy.maximumResetWait)),
                    reason: "opened by \(CircuitBreaker.oneLine(circuit.workerID, limit: 200)): \(CircuitBreaker.oneLine(circuit.reason, limit: 300))"
                )
            }
        } catch {
            logger.debug("reading open circuits failed", metadata: ["error": .string(String(reflecting: error))])
        }
    }

    private func pollOverrides() async {
        while !Task.isCancelled {
            await reloadOverrides()
            try? await Task.sleep(for: overridePollInterval)
        }
    }

    /// Reads the live overrides and applies them (or their absence) to every breaker. On a
    /// database error the breakers keep what they have.
    public func reloadOverrides() async {
        let ticket = registry.beginOverrideReload()
        do {
            let overrides = try await withTimeLimit(.seconds(10), onTimeout: { DatabaseError(.queryFailed, "reading circuit overrides: no answer within 10 s") }) {
                try await CircuitReport.overrides(client: client, logger: logger)
            }
            var byName: [String: CircuitOverride] = [:]
            for override in overrides { byName[override.circuit] = override }
            registry.finishOverrideReload(ticket) {
                for breaker in registry.all {
                    if let override = byName[breaker.name] {
                        breaker.applyOverride(override.state, reason: "\(override.reason) (set by \(override.setBy))")
                    } else {
                        breaker.applyOverride(nil, reason: "")
                    }
                }
            }
            registry.markOverridesLoaded()
        } catch {
            if !registry.overridesLoaded {
                // Claims cannot work either while Postgres is unreadable; do not hold the
                // worker back on this alone once it is back.
                logger.warning("reading circuit overrides failed; sending without them until they can be read", metadata: ["error": .string(String(reflecting: error))])
                registry.markOverridesLoaded()
            } else {
                logger.debug("reading circuit overrides failed", metadata: ["error": .string(String(reflecting: error))])
            }
        }
    }
}
