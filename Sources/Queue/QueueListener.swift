import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle

/// Holds one dedicated connection that LISTENs on `fila_mensagens` and turns each
/// notification into a wake-up for the worker. When the connection drops it reconnects
/// with backoff, and signals once on every (re)connect, since notifications sent while it
/// was away are lost. The worker's poll fallback covers the gap either way.
///
/// Dedicated, not pooled: LISTEN is session state, so it also works when the pool goes
/// through a transaction pooler and this connection (`DATABASE_LISTEN_URL`) does not.
public struct QueueListener: Service {
    public static let channel = "fila_mensagens"

    let url: DatabaseURL
    let wake: WakeSignal
    let logger: Logger

    public init(url: DatabaseURL, wake: WakeSignal, logger: Logger) {
        self.url = url
        self.wake = wake
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var failures = 0
            while !Task.isCancelled {
                do {
                    try await url.withConnection(logger: logger) { connection in
                        try await connection.listen(on: Self.channel) { notifications in
                            if failures > 0 { logger.info("listening for new messages again") }
                            failures = 0
                            wake.signalWork()
                            for try await _ in notifications {
                                wake.signalWork()
                            }
                            throw ListenerClosed()
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    if failures == 0 {
                        logger.warning(
                            "LISTEN connection lost; polling until it is back",
                            metadata: ["error": .string(String(reflecting: error))]
                        )
                    }
                }
                failures += 1
                let delay = Backoff(base: .milliseconds(250), multiplier: 2, maximum: .seconds(10), jitter: .proportional(0.5))
                    .delay(forAttempt: failures)
                try? await Task.sleep(for: delay)
            }
        }
    }
}

/// The LISTEN connection ended without an error of its own (the server went away).
struct ListenerClosed: Error, CustomStringConvertible {
    var description: String { "the LISTEN connection was closed" }
}
