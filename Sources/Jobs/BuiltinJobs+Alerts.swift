import Observability
import Primitives

/// T01.5, alert `fila_acumulada`: more than `alert.fila_acumulada.limit` (50) pending
/// messages due for over `alert.fila_acumulada.minutes` (30), checked every 10 minutes by
/// `verificar-fila-acumulada`, re-notified at most every `alert.fila_acumulada.cooldown_seconds`
/// (3600) while it lasts.
enum BacklogAlert {
    static let rule = "fila_acumulada"
    static let cooldown = Duration.seconds(3600)

    static func alert(overdue: Int, oldestMinutes: Int, limit: Int, minutes: Int) -> Alert {
        Alert(
            rule: rule,
            title: "Fila acumulada: \(overdue) mensagens atrasadas",
            text: "Há \(overdue) mensagens pendentes vencidas há mais de \(minutes) min (limite \(limit)); a mais antiga espera há \(oldestMinutes) min. Veja `SELECT * FROM ops.fila_metricas;` e `SELECT * FROM ops.workers;`.",
            fields: [
                .init("Pendentes atrasadas", String(overdue)),
                .init("Mais antiga", "\(oldestMinutes) min"),
                .init("Limite", "\(limit) por mais de \(minutes) min"),
            ],
            details: ["pendentes_atrasadas": .integer(overdue), "mensagem_mais_antiga_minutos": .integer(oldestMinutes), "limite": .integer(limit), "minutos": .integer(minutes)]
        )
    }
}

/// T01.6, alert `worker_sem_heartbeat` (the January incident): no `fila worker` process is
/// alive by `fila_process_alive` (heartbeat within `heartbeat.timeout_seconds`, 120) while
/// pending messages have been due for `alert.worker_sem_heartbeat.due_seconds` (120, so a
/// restart does not page), checked every minute by `verificar-heartbeats`, re-notified every
/// `alert.worker_sem_heartbeat.cooldown_seconds` (1800) while nothing is sent.
enum NoWorkerAlert {
    static let rule = "worker_sem_heartbeat"
    static let cooldown = Duration.seconds(1800)
    static let dueSeconds = 120

    static func alert(due: Int, oldestSeconds: Int, lastWorkerBeatSeconds: Int?, silent: [JSONValue]) -> Alert {
        let lastBeat = lastWorkerBeatSeconds.map { "há \(minutesAndSeconds($0))" } ?? "nenhum worker jamais registrado"
        return Alert(
            rule: rule,
            title: "Nenhum worker vivo: \(due) mensagens sem envio",
            text: "Nenhum processo `fila worker` tem heartbeat recente e \(due) mensagens pendentes já venceram (a mais antiga há \(minutesAndSeconds(oldestSeconds))): nada está sendo enviado. Inicie um worker (`fila worker`) e confira `SELECT * FROM ops.workers;`.",
            fields: [
                .init("Mensagens vencidas", String(due)),
                .init("Mais antiga", minutesAndSeconds(oldestSeconds)),
                .init("Último heartbeat de worker", lastBeat),
                .init("Processos sem heartbeat", String(silent.count)),
            ],
            details: [
                "pendentes_vencidas": .integer(due),
                "mais_antiga_segundos": .integer(oldestSeconds),
                "ultimo_heartbeat_worker_segundos": lastWorkerBeatSeconds.map { .integer($0) } ?? .null,
                "sem_heartbeat": .array(silent),
            ]
        )
    }

    private static func minutesAndSeconds(_ seconds: Int) -> String {
        seconds < 60 ? "\(seconds) s" : "\(seconds / 60) min \(seconds % 60) s"
    }
}
