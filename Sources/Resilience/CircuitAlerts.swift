import Logging
import Observability
import PostgresNIO
import Primitives

/// The alert rule that watches the circuit breakers. Every `fila` process evaluates it
/// (`AlertEvaluator`).
public enum CircuitAlerts {
    /// `circuito_aberto`, one alert per circuit: in some live process the circuit has not
    /// been CLOSED for longer than `alert.circuito_aberto.after_seconds` (600: two of the
    /// seed's 300 s open periods, so one failed probe does not page) and is still cycling
    /// (its last transition, plus the open period it set, is within that time: a breaker left
    /// OPEN with no traffic since fails nothing); or an operator's FORCED_OPEN has held it
    /// for that long. Re-notified every `alert.circuito_aberto.cooldown_seconds` (3600).
    public static func openTooLong(client: PostgresClient) -> AlertRule {
        AlertRule(name: CircuitOpenAlert.rule, cooldown: CircuitOpenAlert.cooldown) { settings, logger in
            let after = settings.integer("after_seconds", default: CircuitOpenAlert.afterSeconds, in: 10...86_400)
            var spells: [String: CircuitOpenAlert.Spell] = [:]
            let rows = try await client.query(
                """
                SELECT s.circuit_name, s.state, floor(extract(epoch FROM now() - sp.since))::int8, l.reason
                  FROM ops.circuit_states s
                 CROSS JOIN LATERAL (SELECT t.reason, t.open_seconds FROM circuit_transitions t
                                      WHERE t.worker_id = s.worker_id AND t.circuit_name = s.circuit_name
                                      ORDER BY t.id DESC LIMIT 1) l
                 -- When the process's circuit last stopped being CLOSED.
                 CROSS JOIN LATERAL (SELECT min(t.created_at) AS since FROM circuit_transitions t
                                      WHERE t.worker_id = s.worker_id AND t.circuit_name = s.circuit_name
                                        AND t.id > coalesce((SELECT c.id FROM circuit_transitions c
                                                              WHERE c.worker_id = s.worker_id AND c.circuit_name = s.circuit_name
                                                                AND c.to_state IN ('CLOSED', 'FORCED_CLOSED')
                                                              ORDER BY c.id DESC LIMIT 1), 0)) sp
                 WHERE s.state IN ('OPEN', 'HALF_OPEN') AND s.override IS NULL
                   AND sp.since < now() - make_interval(secs => \(after))
                   AND s.since + make_interval(secs => coalesce(l.open_seconds, 0)) > now() - make_interval(secs => \(after))
                 ORDER BY s.circuit_name
                """,
                logger: logger
            )
            for try await (circuit, state, seconds, reason) in rows.decode((String, String, Int, String).self) {
                spells[circuit, default: .init(circuit: circuit)].add(process: state, seconds: seconds, reason: reason)
            }
            let forced = try await client.query(
                """
                SELECT circuit_name, reason, set_by, floor(extract(epoch FROM now() - created_at))::int8
                  FROM circuit_overrides
                 WHERE state = 'FORCED_OPEN' AND (expires_at IS NULL OR expires_at > now())
                   AND created_at < now() - make_interval(secs => \(after))
                """,
                logger: logger
            )
            for try await (circuit, reason, setBy, seconds) in forced.decode((String, String, String, Int).self) {
                spells[circuit, default: .init(circuit: circuit)].forced = (reason, setBy, seconds)
            }
            return spells.keys.sorted().compactMap { spells[$0]?.alert(afterSeconds: after) }
        }
    }
}

/// The text of `circuito_aberto`.
enum CircuitOpenAlert {
    static let rule = "circuito_aberto"
    static let cooldown = Duration.seconds(3600)
    static let afterSeconds = 600

    /// One circuit's open spell across the live processes.
    struct Spell {
        let circuit: String
        var processes = 0
        var states: [String: Int] = [:]
        var longestSeconds = 0
        var reasons: [String] = []
        var forced: (reason: String, setBy: String, seconds: Int)?

        init(circuit: String) {
            self.circuit = circuit
        }

        mutating func add(process state: String, seconds: Int, reason: String) {
            processes += 1
            states[state, default: 0] += 1
            longestSeconds = max(longestSeconds, seconds)
            if !reasons.contains(reason), reasons.count < 3 { reasons.append(reason) }
        }

        func alert(afterSeconds: Int) -> Alert {
            let minutes = max(longestSeconds, forced?.seconds ?? 0) / 60
            let text: String
            if let forced {
                text = "O circuito `\(circuit)` está FORCED_OPEN por `\(forced.setBy)` há \(forced.seconds / 60) min (motivo: \(forced.reason)): nada sai por ele. Para liberar: `SELECT ops.release_circuit('\(circuit)');`."
            } else {
                text = "O circuito `\(circuit)` não fecha há \(longestSeconds / 60) min em \(processes) processo(s): as mensagens por ele são adiadas (FAILED_CIRCUIT_OPEN, sem gastar tentativa). Último motivo: \(reasons.first ?? "?"). Veja `SELECT * FROM ops.circuit_states;` e `GET /health/circuits/history?circuit=\(circuit)`."
            }
            var fields: [Alert.Field] = [.init("Aberto há", "\(minutes) min"), .init("Limite", "\(afterSeconds / 60) min")]
            if processes > 0 { fields.append(.init("Processos", states.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))) }
            if let forced { fields.append(.init("Forçado por", forced.setBy)) }
            return Alert(
                rule: CircuitOpenAlert.rule,
                key: circuit,
                title: forced != nil ? "Circuito \(circuit) forçado aberto há \(minutes) min" : "Circuito \(circuit) aberto há \(minutes) min",
                text: text,
                fields: fields,
                details: [
                    "circuit": .string(circuit),
                    "segundos_aberto": .integer(max(longestSeconds, forced?.seconds ?? 0)),
                    "limite_segundos": .integer(afterSeconds),
                    "processos": .integer(processes),
                    "motivos": .array(reasons.map { .string($0) }),
                    "forcado": .bool(forced != nil),
                ]
            )
        }
    }
}
