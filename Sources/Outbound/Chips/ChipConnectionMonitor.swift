import Database
import Foundation
import Logging
import Observability
import PostgresNIO
import Primitives

/// The WhatsApp connection monitor (seed T03.7): asks every chip's provider for its
/// connection state, concurrently, each call within `ChipConnectionCheck.timeout`, with no
/// subprocess; writes it to `chips.connection_state` (selection skips a chip not connected
/// as soon as its workers hear the change); and reports alert `whatsapp_desconectado`, one
/// instance per chip, for an active chip disconnected for `alert.whatsapp_desconectado.seconds`
/// (300) or more, resolved when it reconnects. A provider that does not answer makes the
/// chip `unknown`: not an alert of its own, and not a reconnection either (an alert already
/// firing for the chip goes on firing).
public struct ChipConnectionMonitor: Sendable {
    public static let rule = "whatsapp_desconectado"
    public static let threshold = Duration.seconds(300)
    public static let cooldown = Duration.seconds(1800)

    let store: ChipStore
    let check: ChipConnectionCheck
    let alerts: AlertStore

    public init(store: ChipStore, check: ChipConnectionCheck, alerts: AlertStore) {
        self.store = store
        self.check = check
        self.alerts = alerts
    }

    /// One round; returns the job's result: `{"chips": {"<id>": "open", …}, "firing": [ids]}`.
    public func run(logger: Logger) async throws -> JSONValue {
        let chips = try await store.chips(logger: logger)
        let results = await withTaskGroup(of: (Chip, ChipConnectionCheck.Result).self) { group in
            for chip in chips {
                group.addTask { (chip, await check.check(chip, logger: logger)) }
            }
            var results: [(Chip, ChipConnectionCheck.Result)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0.id < $1.0.id }
        }
        let settings = try await alerts.settings(for: Self.rule, logger: logger)
        let threshold = settings.duration("seconds", default: Self.threshold)
        let alreadyFiring = try await firingChips(logger: logger)
        var firing: [Alert] = []
        var states: [String: JSONValue] = [:]
        for (chip, result) in results {
            let since = try await store.recordConnection(chipID: chip.id, state: result.state, detail: result.detail, logger: logger)
            states[chip.id] = .string(result.state.rawValue)
            if result.state == .unknown {
                logger.warning("a chip's provider did not say its connection state", metadata: ["chip.id": .string(chip.id), "detail": .string(result.detail)])
            }
            guard chip.status == .ativo else { continue }
            let disconnectedLongEnough = !result.state.allowsSending && (since ?? 0) >= threshold.seconds
            let stillUnknown = result.state == .unknown && alreadyFiring.contains(chip.id)
            if disconnectedLongEnough || stillUnknown {
                firing.append(alert(chip: chip, result: result, seconds: Int(since ?? 0)))
            }
        }
        try await alerts.report(
            rule: Self.rule, firing: firing, cooldown: settings.cooldown(default: Self.cooldown),
            resolveAfter: settings.resolveAfter(), logger: logger
        )
        return ["chips": .object(states), "firing": .array(firing.map { .string($0.key) })]
    }

    private func firingChips(logger: Logger) async throws -> Set<String> {
        do {
            let rows = try await store.client.query("SELECT key FROM alert_state WHERE rule = \(Self.rule) AND firing", logger: logger)
            var keys: Set<String> = []
            for try await key in rows.decode(String.self) { keys.insert(key) }
            return keys
        } catch {
            throw DatabaseError(wrapping: error, context: "reading the firing \(Self.rule) alerts failed")
        }
    }

    private func alert(chip: Chip, result: ChipConnectionCheck.Result, seconds: Int) -> Alert {
        let minutes = seconds / 60
        return Alert(
            rule: Self.rule,
            key: chip.id,
            title: "WhatsApp desconectado: chip \(chip.id) (\(chip.nome))",
            text: "O chip `\(chip.id)` (\(chip.provider.rawValue), instância `\(chip.instance)`) está `\(result.state.rawValue)` há \(minutes) min: \(result.detail). "
                + "A seleção já o ignora. Reconecte a instância (QR code) ou pause o chip com `SELECT ops.pause_chip('\(chip.id)', 'motivo');`. Veja `SELECT * FROM ops.chips_uso;`.",
            fields: [
                .init("Chip", "\(chip.id) · \(chip.nome)"),
                .init("Provider", "\(chip.provider.rawValue) · \(chip.instance)"),
                .init("Estado", result.state.rawValue),
                .init("Há", "\(minutes) min"),
            ],
            details: [
                "chip_id": .string(chip.id), "provider": .string(chip.provider.rawValue), "estado": .string(result.state.rawValue),
                "detalhe": .string(result.detail), "segundos": .integer(seconds),
            ]
        )
    }
}
