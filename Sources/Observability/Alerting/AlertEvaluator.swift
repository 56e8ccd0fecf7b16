import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle
import Synchronization

/// Evaluates `AlertRule`s on a timer and reports what they find to the `AlertStore`. Every
/// long-running `fila` process runs one (API, worker and scheduler alike): the store's row
/// locks make the replicas' evaluations of one condition queue a single notification, so
/// running it everywhere costs a few queries a minute per process and buys an alert that
/// still goes out when the scheduler, or any one kind of process, is gone.
///
/// The interval is `app_settings` `alert.evaluation_interval_seconds` (1–600, default 60),
/// read at every round, so a change applies within the current interval. After a round in
/// which every rule was evaluated (the database answered every query), the evaluator pings
/// its `DeadmanSwitch`, when it has one: the scheduler's proof of life to an outside service.
///
/// ```swift
/// let evaluator = AlertEvaluator(client: client, rules: [noScheduler, lateJobs], logger: logger)
/// // in the process's ServiceGroup
/// ```
public final class AlertEvaluator: Service, Sendable {
    /// What one round did.
    public struct Round: Sendable, Hashable {
        /// Rules evaluated and reported (an inhibited rule counts: it was evaluated).
        public var evaluated: [String] = []
        /// Rules whose evaluation or report failed (the database, mostly).
        public var failed: [String] = []
        /// Notifications the round queued.
        public var queued: [AlertStore.Event] = []
        /// Whether the dead man's switch was pinged, and answered.
        public var deadmanPinged = false

        public init() {}

        /// Every rule was evaluated: the deployment can judge its own health.
        public var isHealthy: Bool { failed.isEmpty }
    }

    public static let defaultInterval = Duration.seconds(60)

    public let rules: [AlertRule]
    private let client: PostgresClient
    private let store: AlertStore
    private let deadman: DeadmanSwitch?
    private let logger: Logger
    private let interval: Mutex<Duration>

    /// - Parameter deadman: pinged after each healthy round; the evaluator shuts it down
    ///   when `run()` ends.
    public init(client: PostgresClient, rules: [AlertRule], deadman: DeadmanSwitch? = nil, logger: Logger) {
        self.client = client
        self.store = AlertStore(client: client)
        self.rules = rules
        self.deadman = deadman
        self.logger = logger
        self.interval = Mutex(Self.defaultInterval)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                // The first round waits one interval too: a process that has just started,
                // and its peers, get time to write their first heartbeats.
                await self.readInterval()
                try? await Task.sleep(for: self.interval.withLock { $0 })
                guard !Task.isCancelled else { break }
                _ = await self.evaluate()
            }
        }
        try? await deadman?.shutdown()
    }

    /// One round: evaluates every rule with its settings read now, and
    /// reports each to the store. A rule that fails is logged and the others still run.
    public func evaluate() async -> Round {
        var round = Round()
        for rule in rules {
            do {
                let settings = try await store.settings(for: rule.name, logger: logger)
                if let firing = try await rule.evaluate(settings, logger) {
                    round.queued += try await store.report(rule: rule.name, firing: firing, cooldown: settings.cooldown(default: rule.cooldown), logger: logger)
                }
                round.evaluated.append(rule.name)
            } catch {
                round.failed.append(rule.name)
                logger.error("cannot evaluate alert rule", metadata: ["alert.rule": .string(rule.name), "error": .string(String(reflecting: error))])
            }
        }
        for event in round.queued {
            logger.warning("alert queued", metadata: ["alert.id": .stringConvertible(event.id), "alert.rule": .string(event.rule), "alert.key": .string(event.key), "alert.kind": .string(event.kind.rawValue)])
        }
        if round.isHealthy, let deadman {
            round.deadmanPinged = await deadman.ping(logger: logger)
        }
        return round
    }
}

extension AlertEvaluator {
    /// The interval from app_settings; the last one known when the database does not answer.
    private func readInterval() async {
        if let seconds = try? await store.evaluationIntervalSeconds(logger: logger) {
            interval.withLock { $0 = .seconds(seconds) }
        }
    }
}

extension AlertStore {
    /// `app_settings` `alert.evaluation_interval_seconds`, when set to a whole number of
    /// seconds from 1 to 600; the default otherwise.
    func evaluationIntervalSeconds(logger: Logger) async throws -> Int {
        let rows = try await client.query(
            "SELECT value::text FROM app_settings WHERE key = 'alert.evaluation_interval_seconds'",
            logger: logger
        )
        for try await text in rows.decode(String.self) {
            if let seconds = JSONValue(parsing: text)?.integerValue, (1...600).contains(seconds) { return seconds }
        }
        return Int(AlertEvaluator.defaultInterval.components.seconds)
    }
}
