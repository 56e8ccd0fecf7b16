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
/// The transition rows are `CircuitTransitionLog`'s, the override state
/// `CircuitOverrides`'s; this service runs them, and its LISTEN connection is a dedicated
/// `NotificationListener` (`url`), like the queue listener's.
public struct CircuitBreakerSync: Service {
    public static let channel = CircuitTransitionLog.channel

    let registry: CircuitBreakerRegistry
    let client: PostgresClient
    let listener: NotificationListener
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
        self.listener = NotificationListener(
            url: listenURL, channel: Self.channel, purpose: "circuit broadcasts",
            whileAway: "reconnecting (overrides are still polled)", logger: logger
        )
        self.processID = processID
        self.overridePollInterval = overridePollInterval
        self.logger = logger
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await cancelWhenGracefulShutdown { await self.listen() } }
            group.addTask { await cancelWhenGracefulShutdown { await self.pollOverrides() } }
            group.addTask { await cancelWhenGracefulShutdown { await self.followBroadcastOpenings() } }
            group.addTask { await registry.transitions.writeContinuously(processID: processID, client: client, logger: logger) }
        }
    }

    /// Writes `transitions` as this process's rows now (what the background writer does).
    func write(_ transitions: [CircuitTransition]) async throws {
        try await registry.transitions.write(transitions, processID: processID, client: client, logger: logger)
    }

    // MARK: - Other replicas' openings and overrides

    private func listen() async {
        await listener.run(
            onConnect: {
                // Overrides may have changed, and other processes may have opened circuits,
                // while this connection was away (or before this process started).
                await reloadOverrides()
                await followOpenCircuits()
            },
            onNotification: { payload in await handle(payload) }
        )
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
        await registry.overrides.reload(into: { [registry] in registry.all }, client: client, logger: logger)
    }
}
