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

/// T03.3, alert `erros_acumulados`: more than `alert.erros_acumulados.limit` (10) send
/// errors whose attempt ended in the last `alert.erros_acumulados.window_seconds` (300),
/// with the breakdown by outcome and reason; re-notified at most every
/// `alert.erros_acumulados.cooldown_seconds` (1800). Errors are the outcomes
/// `ops.fila_metricas.erros_ultima_hora` counts: deferrals that burn no attempt (circuit
/// open, rate limit, no chip) are not errors.
enum ErrorsAlert {
    static let rule = "erros_acumulados"
    static let cooldown = Duration.seconds(1800)
    static let limit = 10
    static let windowSeconds = 300
    static let outcomes = ["FAILED_PROVIDER", "FAILED_TIMEOUT", "FAILED_VALIDATION", "FAILED_STUCK", "FAILED_EXPIRED"]

    static func alert(total: Int, breakdown: [(outcome: String, reason: String, count: Int)], limit: Int, windowSeconds: Int) -> Alert {
        Alert(
            rule: rule,
            title: "Erros acumulados: \(total) erros em \(windowSeconds / 60) min",
            text: "\(total) envios falharam nos últimos \(windowSeconds / 60) min (limite \(limit)). Por tipo:\n"
                + breakdown.prefix(8).map { "• `\($0.outcome)` \($0.reason.isEmpty ? "" : "(\($0.reason)) ")— \($0.count)" }.joined(separator: "\n"),
            fields: breakdown.prefix(8).map { .init($0.reason.isEmpty ? $0.outcome : "\($0.outcome) · \($0.reason)", String($0.count)) },
            details: [
                "erros": .integer(total),
                "limite": .integer(limit),
                "janela_segundos": .integer(windowSeconds),
                "por_tipo": .array(breakdown.map { ["outcome": .string($0.outcome), "reason": .string($0.reason), "count": .integer($0.count)] }),
            ]
        )
    }
}

/// Alert `mensagens_nao_enviadas`: any message that ended for good without being sent
/// (`erro`, or `cancelada` by expiry) in the last `alert.mensagens_nao_enviadas.window_seconds`
/// (1200), with counts by outcome and reason, so no message fails silently. Re-notified
/// every `alert.mensagens_nao_enviadas.cooldown_seconds` (900) while new ones keep ending so:
/// the window is longer than the cooldown plus the check's interval, so every such message is
/// counted in some notification.
enum UnsentAlert {
    static let rule = "mensagens_nao_enviadas"
    static let cooldown = Duration.seconds(900)
    static let windowSeconds = 1200

    static func alert(total: Int, breakdown: [(outcome: String, reason: String, count: Int)], windowSeconds: Int) -> Alert {
        Alert(
            rule: rule,
            title: "\(total) mensagens não enviadas nos últimos \(windowSeconds / 60) min",
            text: "\(total) mensagens terminaram sem envio (status `erro`, ou `cancelada` por expiração). Veja `SELECT id, cliente_id, outcome, outcome_reason_code, ultimo_erro FROM fila_mensagens WHERE status IN ('erro', 'cancelada') AND outcome_at > now() - interval '\(windowSeconds / 60) minutes';` e a seção 4.2 do runbook para reenviar.",
            fields: breakdown.prefix(8).map { .init($0.reason.isEmpty ? $0.outcome : "\($0.outcome) · \($0.reason)", String($0.count)) },
            details: [
                "nao_enviadas": .integer(total),
                "janela_segundos": .integer(windowSeconds),
                "por_tipo": .array(breakdown.map { ["outcome": .string($0.outcome), "reason": .string($0.reason), "count": .integer($0.count)] }),
            ]
        )
    }
}
