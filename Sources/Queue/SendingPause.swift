#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle
import Synchronization

/// The sending pause an operator sets with `ops.pause_sending` (the `app_settings` row
/// `sending.pause`), as this process last read it. A worker's sender asks it before each
/// claim (`PausableSender`), so every worker stops claiming while it is set.
///
/// Kept through a database outage: a pause is never lifted because Postgres could not be
/// read, and an expiry (`ate`) is honoured by this process's clock meanwhile.
public final class SendingPause: Sendable {
    public struct Pause: Sendable, Hashable {
        public let motivo: String
        public let por: String
        public let desde: String
        /// When it ends by itself; nil until `ops.resume_sending`. For people (health, logs).
        public let ate: Date?
        /// How long it had left when it was read, by the database's clock.
        public let remaining: Duration?
    }

    private struct State {
        var pause: Pause?
        /// When `pause` was read, by this process's monotonic clock: an expiry is counted from
        /// it, never from this machine's wall clock.
        var readAt: ContinuousClock.Instant = .now
    }

    private let current = Mutex(State())

    public init() {}

    /// The pause in force now, if any: as last read, until its remaining time has passed.
    public var active: Pause? {
        current.withLock { state in
            guard let pause = state.pause else { return nil }
            if let remaining = pause.remaining, ContinuousClock.now - state.readAt >= remaining { return nil }
            return pause
        }
    }

    func set(_ pause: Pause?, readAt: ContinuousClock.Instant = .now) -> (before: Pause?, after: Pause?) {
        current.withLock { state in
            defer { state = State(pause: pause, readAt: readAt) }
            return (state.pause, pause)
        }
    }

    /// Reads the pause in force from Postgres (`fila_sending_pause()`).
    public static func read(client: PostgresClient, logger: Logger) async throws -> Pause? {
        let rows = try await client.query(
            """
            SELECT coalesce(p->>'motivo', ''), coalesce(p->>'por', '?'), coalesce(p->>'desde', '?'),
                   extract(epoch FROM fila_try_timestamptz(p->>'ate'))::float8,
                   extract(epoch FROM fila_try_timestamptz(p->>'ate') - now())::float8
              FROM (SELECT fila_sending_pause() AS p) x
             WHERE p IS NOT NULL
            """,
            logger: logger
        ).collect()
        guard let row = rows.first else { return nil }
        let (motivo, por, desde, ate, remaining) = try row.decode((String, String, String, Double?, Double?).self)
        return Pause(
            motivo: motivo, por: por, desde: desde, ate: ate.map { Date(timeIntervalSince1970: $0) },
            remaining: remaining.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        )
    }
}

/// Keeps a `SendingPause` up to date: at once on `NOTIFY fila_pausa` (sent by
/// `ops.pause_sending` / `ops.resume_sending`), and every `pollInterval` in case a
/// notification was missed or the row was changed by hand.
public struct SendingPauseWatcher: Service {
    public static let channel = "fila_pausa"

    let pause: SendingPause
    let client: PostgresClient
    let listener: NotificationListener
    let pollInterval: Duration
    /// Signalled when the pause changes, so a paused claim loop looks again at once.
    let wake: WakeSignal?
    let logger: Logger
    /// Whether the last read failed: an outage is logged once, not at every poll.
    private let failing = FailureFlag()

    private final class FailureFlag: Sendable {
        let value = Mutex(false)
        /// Marks a failure; true when it is the first of a run.
        func fail() -> Bool {
            value.withLock { failing in
                defer { failing = true }
                return !failing
            }
        }
        func succeed() { value.withLock { $0 = false } }
    }

    public init(pause: SendingPause, client: PostgresClient, listenURL: DatabaseURL, pollInterval: Duration = .seconds(15), wake: WakeSignal? = nil, logger: Logger) {
        self.pause = pause
        self.client = client
        self.listener = NotificationListener(
            url: listenURL, channel: Self.channel, purpose: "sending pauses", whileAway: "reading the pause every \(pollInterval)", logger: logger
        )
        self.pollInterval = pollInterval
        self.wake = wake
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await listener.run(onConnect: { await refresh() }, onNotification: { _ in await refresh() }) }
                group.addTask {
                    while !Task.isCancelled {
                        await refresh()
                        try? await Task.sleep(for: pollInterval)
                    }
                }
            }
        }
    }

    func refresh() async {
        let read: SendingPause.Pause?
        let started = ContinuousClock.now
        do {
            read = try await withTimeLimit(.seconds(5), onTimeout: { DatabaseError(.queryFailed, "reading the sending pause: no answer within 5 s") }) {
                try await SendingPause.read(client: client, logger: logger)
            }
        } catch {
            if failing.fail() {
                logger.warning("cannot read the sending pause; keeping the last one read", metadata: ["error": .string(String(reflecting: error))])
            }
            return
        }
        failing.succeed()
        let (before, after) = pause.set(read, readAt: started)
        // The same pause read again (only its time left has moved): nothing to say.
        guard before?.ate != after?.ate || before?.desde != after?.desde || (before == nil) != (after == nil) else { return }
        if let after {
            logger.warning("sending paused: not claiming", metadata: ["pause.by": .string(after.por), "pause.motivo": .string(after.motivo)])
        } else if before != nil {
            logger.notice("sending resumed")
        }
        wake?.signal()
    }
}

/// A sender that claims nothing while sending is paused (`ops.pause_sending`): its readiness
/// says so, the worker stops claiming and its heartbeat shows why. Messages already claimed
/// are sent as usual.
public struct PausableSender: MessageSender {
    public let pause: SendingPause
    public let sender: any MessageSender

    public init(pause: SendingPause, sender: any MessageSender) {
        self.pause = pause
        self.sender = sender
    }

    public var name: String { sender.name }

    public func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult {
        await sender.send(message, logger: logger)
    }

    public func readiness() -> SenderReadiness {
        if let active = pause.active {
            return .paused(retryAfter: .seconds(1), reason: "sending paused by \(active.por) since \(active.desde): \(active.motivo)")
        }
        return sender.readiness()
    }

    public func healthDetails() -> [String: JSONValue] {
        var details = sender.healthDetails()
        if let active = pause.active {
            details["sending_paused"] = ["motivo": .string(active.motivo), "por": .string(active.por), "desde": .string(active.desde)]
        }
        return details
    }
}
