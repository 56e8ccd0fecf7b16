import Database
import Logging
import Observability
import PostgresNIO
import Primitives

/// The health checks of the queue and of the processes that drain it (T01.4, T01.6).
public enum QueueHealth {
    /// When the queue counts as backed up: more than `backlogLimit` pending with the most
    /// overdue due message waiting `backlogMinutes` or longer (the T01.5 alert's numbers).
    public struct Thresholds: Sendable, Hashable {
        public var backlogLimit: Int
        public var backlogMinutes: Int

        public init(backlogLimit: Int = 50, backlogMinutes: Int = 30) {
            self.backlogLimit = backlogLimit
            self.backlogMinutes = backlogMinutes
        }
    }

    /// The key of `backlog`'s check.
    public static let backlogKey = "fila:backlog"
    /// The seed's six queue fields (T01.4), as `backlog` reports them.
    public static let seedFields: Set<String> = [
        "pendentes", "processando", "enviadas_ultima_hora", "erros_ultima_hora", "tempo_medio_processamento_ms", "mensagem_mais_antiga_minutos",
    ]

    /// `fila:backlog`: the seed's six fields from `ops.fila_metricas`, `warn` above the
    /// backlog thresholds. A backlog is a warning, not a failure: the queue still works, and
    /// `worker:alive` is what fails when nothing drains it.
    public static func backlog(queue: MessageQueue, thresholds: Thresholds = .init(), logger: Logger) -> HealthCheck {
        HealthCheck(component: "fila", measurement: "backlog", componentType: .component) {
            let metrics = try await queue.metrics(logger: logger)
            let backedUp = metrics.pendentes > thresholds.backlogLimit && metrics.mensagemMaisAntigaMinutos >= thresholds.backlogMinutes
            return HealthObservation(
                status: backedUp ? .warn : .pass,
                observedValue: .integer(metrics.pendentes),
                observedUnit: "messages",
                output: backedUp
                    ? "\(metrics.pendentes) messages pending, the oldest due for \(metrics.mensagemMaisAntigaMinutos) min (limit \(thresholds.backlogLimit) for \(thresholds.backlogMinutes) min)"
                    : nil,
                details: [
                    "pendentes": .integer(metrics.pendentes),
                    "processando": .integer(metrics.processando),
                    "enviadas_ultima_hora": .integer(metrics.enviadasUltimaHora),
                    "erros_ultima_hora": .integer(metrics.errosUltimaHora),
                    "tempo_medio_processamento_ms": metrics.tempoMedioProcessamentoMs.map(JSONValue.integer) ?? .null,
                    "mensagem_mais_antiga_minutos": .integer(metrics.mensagemMaisAntigaMinutos),
                ]
            )
        }
    }

    /// `worker:alive`: how many `worker` or `all` processes are alive by the one liveness
    /// rule (heartbeat and claim loop both fresh); `fail` at zero, since then nothing sends.
    public static func liveWorkers(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "worker", measurement: "alive", componentType: .component) {
            let count = try await LiveProcesses.count(kinds: [.worker, .all], client: client, logger: logger)
            return HealthObservation(
                status: count > 0 ? .pass : .fail,
                observedValue: .integer(count),
                observedUnit: "processes",
                output: count > 0 ? nil : "no live worker: nothing is sending"
            )
        }
    }

    /// `worker:sending`: `warn` while an operator has paused sending (`ops.pause_sending`),
    /// saying who, why and until when; `pass` otherwise.
    public static func sendingPause(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "worker", measurement: "sending", componentType: .component) {
            guard let pause = try await SendingPause.read(client: client, logger: logger) else {
                return HealthObservation(status: .pass, observedValue: "sending")
            }
            var details: [String: JSONValue] = ["motivo": .string(pause.motivo), "por": .string(pause.por), "desde": .string(pause.desde)]
            details["ate"] = pause.ate.map { .string($0.formatted(.iso8601)) } ?? .null
            return HealthObservation(
                status: .warn,
                observedValue: "paused",
                output: "sending paused by \(pause.por) since \(pause.desde): \(pause.motivo) (SELECT ops.resume_sending('why'); ends it)",
                details: details
            )
        }
    }

    /// `worker:processes`: every process seen in the last 24 hours, with its kind, host,
    /// heartbeat age, messages in flight and its claim loop's age. One that beats while its
    /// claim loop stands still (`STALLED`) is a warning; the rest only show their state.
    public static func processes(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "worker", measurement: "processes", componentType: .component, nodes: {
            let rows = try await client.query(
                """
                SELECT id, kind, host, state, in_flight,
                       extract(epoch FROM since_heartbeat)::float8,
                       extract(epoch FROM since_claim_loop)::float8
                  FROM ops.workers
                 WHERE last_seen_at > now() - interval '24 hours'
                """,
                logger: logger
            )
            var nodes: [HealthObservation] = []
            for try await (id, kind, host, state, inFlight, age, loopAge) in rows.decode((String, String, String, String, Int32, Double, Double?).self) {
                nodes.append(HealthObservation(
                    status: state == "STALLED" ? .warn : .pass,
                    componentID: id,
                    observedValue: .string(state),
                    output: state == "STALLED" ? "heartbeat fresh but the claim loop has not turned for \(Int(loopAge ?? 0)) s" : nil,
                    details: [
                        "kind": .string(kind),
                        "host": .string(host),
                        "age_seconds": .integer(Int(age.rounded(.down))),
                        "in_flight": .integer(Int(inFlight)),
                        "claim_loop_age_seconds": loopAge.map { .integer(Int($0.rounded(.down))) } ?? .null,
                    ]
                ))
            }
            return nodes
        })
    }
}
