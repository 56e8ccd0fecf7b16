import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle

/// Turns each notification on `fila_mensagens` into a wake-up for the worker, through one
/// dedicated LISTEN connection (`NotificationListener`). It also signals on every
/// (re)connect, since notifications sent while it was away are lost; the worker's poll
/// fallback covers the gap either way.
public struct QueueListener: Service {
    public static let channel = "fila_mensagens"

    let listener: NotificationListener
    let wake: WakeSignal

    public init(url: DatabaseURL, wake: WakeSignal, logger: Logger) {
        self.listener = NotificationListener(
            url: url, channel: Self.channel, purpose: "new messages", whileAway: "polling until it is back", logger: logger
        )
        self.wake = wake
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await listener.run(onConnect: { wake.signalWork() }, onNotification: { _ in wake.signalWork() })
        }
    }
}
