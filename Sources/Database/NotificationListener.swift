import Logging
import PostgresNIO
import Primitives

/// One dedicated connection that LISTENs on a channel for as long as its task runs, and
/// reconnects with backoff when the connection drops. Every listener in Fila (new messages,
/// circuit broadcasts, alerts) is one of these.
///
/// Notifications sent while the connection was away are lost, so `onConnect` runs after
/// every (re)connect, before any notification: the place to re-read whatever the channel
/// announces. A lost connection is logged once per outage, and its return once.
///
/// Dedicated, not pooled: LISTEN is session state, so it also works when the pool goes
/// through a transaction pooler and this connection (`DATABASE_LISTEN_URL`) does not.
///
/// ```swift
/// let listener = NotificationListener(url: url, channel: "fila_mensagens", purpose: "new messages",
///                                     whileAway: "polling until it is back", logger: logger)
/// await listener.run(onConnect: { wake.signalWork() }, onNotification: { _ in wake.signalWork() })
/// ```
public struct NotificationListener: Sendable {
    public let url: DatabaseURL
    public let channel: String
    /// What the channel carries, for log lines ("new messages").
    public let purpose: String
    /// What covers for the listener while it is away, for the log line of an outage.
    public let whileAway: String
    public let reconnectBackoff: Backoff
    let logger: Logger

    public init(
        url: DatabaseURL,
        channel: String,
        purpose: String,
        whileAway: String,
        reconnectBackoff: Backoff = Backoff(base: .milliseconds(250), multiplier: 2, maximum: .seconds(10), jitter: .proportional(0.5)),
        logger: Logger
    ) {
        self.url = url
        self.channel = channel
        self.purpose = purpose
        self.whileAway = whileAway
        self.reconnectBackoff = reconnectBackoff
        self.logger = logger
    }

    /// Listens until the task is cancelled; never throws, never returns earlier.
    public func run(onConnect: @Sendable () async -> Void, onNotification: @Sendable (String) async -> Void) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await url.withConnection(logger: logger) { connection in
                    try await connection.listen(on: channel) { notifications in
                        if failures > 0 { logger.info("listening for \(purpose) again") }
                        failures = 0
                        await onConnect()
                        for try await notification in notifications {
                            await onNotification(notification.payload)
                        }
                        throw ListenerClosed()
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if failures == 0 {
                    logger.warning(
                        "LISTEN connection lost (\(purpose)); \(whileAway)",
                        metadata: ["error": .string(String(reflecting: error))]
                    )
                }
            }
            failures += 1
            try? await Task.sleep(for: reconnectBackoff.delay(forAttempt: failures))
        }
    }
}

/// The LISTEN connection ended without an error of its own (the server went away).
struct ListenerClosed: Error, CustomStringConvertible {
    var description: String { "the LISTEN connection was closed" }
}
