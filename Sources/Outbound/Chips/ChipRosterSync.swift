import Database
import Logging
import ServiceLifecycle

/// Drops the roster's cached list whenever a chip changes (`NOTIFY fila_chips`, sent by the
/// table's triggers) and after every reconnect of its LISTEN connection, since notifications
/// sent meanwhile are lost. Without it the list is still re-read every `cacheDuration`.
public struct ChipRosterSync: Service {
    public static let channel = "fila_chips"

    let roster: ChipRoster
    let listener: NotificationListener

    public init(roster: ChipRoster, listenURL: DatabaseURL, logger: Logger) {
        self.roster = roster
        self.listener = NotificationListener(
            url: listenURL, channel: Self.channel, purpose: "chip changes",
            whileAway: "the chip list is re-read every minute until it is back", logger: logger
        )
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await listener.run(onConnect: { roster.invalidate() }, onNotification: { _ in roster.invalidate() })
        }
    }
}
