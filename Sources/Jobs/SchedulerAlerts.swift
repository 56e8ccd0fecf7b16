#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Observability
import PostgresNIO
import Primitives

/// The alert rules that watch the scheduler and its jobs. Every `fila` process evaluates
/// them (`AlertEvaluator`), so they fire when the scheduler is the process that died or hung.
public enum SchedulerAlerts {
    /// `scheduler_sem_heartbeat`: no `scheduler` or `all` process is alive by
    /// `fila_process_alive`, and none has beaten for `alert.scheduler_sem_heartbeat.after_seconds`
    /// (120, so a restart does not page; counted from `watcher`'s own start when no
    /// scheduler ever ran). While it lasts no check runs, no lost worker's messages are
    /// rescued, nothing is cleaned up. Re-notified every `cooldown_seconds` (1800).
    public static func noScheduler(client: PostgresClient, watcher: ProcessIdentity) -> AlertRule {
        AlertRule(name: NoSchedulerAlert.rule, cooldown: NoSchedulerAlert.cooldown) { settings, logger in
            let after = settings.integer("after_seconds", default: NoSchedulerAlert.afterSeconds, in: 10...86_400)
            let rows = try await client.query(
                """
                SELECT count(*) FILTER (WHERE fila_process_alive(h))::int8,
                       floor(extract(epoch FROM now() - coalesce(max(h.last_seen_at),
                             (SELECT w.started_at FROM worker_heartbeats w WHERE w.id = \(watcher.id)), now())))::int8,
                       count(*)::int8
                  FROM worker_heartbeats h
                 WHERE h.kind IN ('scheduler', 'all')
                """,
                logger: logger
            ).collect()
            guard let (alive, silentSeconds, known) = try rows.first?.decode((Int, Int, Int).self) else { return [] }
            guard alive == 0, silentSeconds >= after else { return [] }
            let schedulers = try await schedulerHeartbeats(client: client, logger: logger)
            return [NoSchedulerAlert.alert(silentSeconds: silentSeconds, everSeen: known > 0, schedulers: schedulers, watcher: watcher)]
        }
    }

    /// `job_atrasado` (T03.6), one alert per job: an enabled job whose last success is older
    /// than its `late_after_seconds` (twice its interval unless set otherwise), or whose
    /// current run has been going for longer than its SLA. The message names the job's last
    /// run and the schedulers' heartbeats. While no scheduler is alive the rule does not
    /// judge (every job is late then, and `scheduler_sem_heartbeat` says why). Re-notified
    /// every `alert.job_atrasado.cooldown_seconds` (3600).
    public static func lateJobs(client: PostgresClient) -> AlertRule {
        AlertRule(name: LateJobAlert.rule, cooldown: LateJobAlert.cooldown) { _, logger in
            let schedulers = try await schedulerHeartbeats(client: client, logger: logger)
            guard schedulers.contains(where: \.alive) else { return nil }
            let rows = try await client.query(
                """
                SELECT d.name, d.schedule, d.late_after_seconds, d.sla_seconds,
                       floor(extract(epoch FROM now() - coalesce(s.last_success, d.created_at)))::int8,
                       s.last_success IS NOT NULL,
                       coalesce(l.status, ''), coalesce(l.error, ''),
                       CASE WHEN l.status = 'running' THEN floor(extract(epoch FROM now() - l.started_at))::int8 END
                  FROM job_definitions d
                  LEFT JOIN LATERAL (SELECT max(finished_at) AS last_success FROM job_executions e
                                      WHERE e.job_name = d.name AND e.status = 'success') s ON true
                  LEFT JOIN LATERAL (SELECT status, error, started_at FROM job_executions e
                                      WHERE e.job_name = d.name AND e.status <> 'skipped'
                                      ORDER BY coalesce(e.started_at, e.created_at) DESC LIMIT 1) l ON true
                 WHERE d.enabled
                   AND (coalesce(s.last_success, d.created_at) < now() - make_interval(secs => d.late_after_seconds)
                        OR (l.status = 'running' AND l.started_at < now() - make_interval(secs => d.sla_seconds)))
                 ORDER BY d.name
                """,
                logger: logger
            )
            var alerts: [Alert] = []
            for try await (name, schedule, lateAfter, sla, sinceSuccess, everSucceeded, lastStatus, lastError, runningFor) in rows.decode((String, String, Int, Int, Int, Bool, String, String, Int?).self) {
                alerts.append(
                    LateJobAlert.alert(
                        job: name, schedule: schedule, lateAfterSeconds: lateAfter, slaSeconds: sla, secondsSinceSuccess: sinceSuccess,
                        everSucceeded: everSucceeded, lastStatus: lastStatus, lastError: lastError, runningSeconds: runningFor, schedulers: schedulers
                    )
                )
            }
            return alerts
        }
    }

    /// A scheduler process as the alerts show it.
    struct SchedulerBeat: Sendable {
        let id: String
        let host: String
        let status: String
        let ageSeconds: Int
        let alive: Bool

        var json: JSONValue {
            ["id": .string(id), "host": .string(host), "status": .string(status), "segundos_desde_heartbeat": .integer(ageSeconds), "vivo": .bool(alive)]
        }

        var line: String {
            "`\(id)` (\(host)): \(alive ? "vivo" : status == "stopped" ? "parado" : "sem heartbeat"), último heartbeat há \(NoSchedulerAlert.minutesAndSeconds(ageSeconds))"
        }
    }

    /// The scheduler processes known to `worker_heartbeats`, most recent first (the last 5).
    static func schedulerHeartbeats(client: PostgresClient, logger: Logger) async throws -> [SchedulerBeat] {
        let rows = try await client.query(
            """
            SELECT h.id, h.host, h.status, floor(extract(epoch FROM now() - h.last_seen_at))::int8, fila_process_alive(h)
              FROM worker_heartbeats h
             WHERE h.kind IN ('scheduler', 'all')
             ORDER BY h.last_seen_at DESC
             LIMIT 5
            """,
            logger: logger
        )
        var beats: [SchedulerBeat] = []
        for try await (id, host, status, age, alive) in rows.decode((String, String, String, Int, Bool).self) {
            beats.append(SchedulerBeat(id: id, host: host, status: status, ageSeconds: age, alive: alive))
        }
        return beats
    }
}

/// The text of `scheduler_sem_heartbeat`.
enum NoSchedulerAlert {
    static let rule = "scheduler_sem_heartbeat"
    static let cooldown = Duration.seconds(1800)
    static let afterSeconds = 120

    static func alert(silentSeconds: Int, everSeen: Bool, schedulers: [SchedulerAlerts.SchedulerBeat], watcher: ProcessIdentity) -> Alert {
        let last = everSeen ? "último heartbeat de scheduler há \(minutesAndSeconds(silentSeconds))" : "nenhum scheduler jamais registrado"
        return Alert(
            rule: rule,
            title: "Nenhum scheduler vivo: jobs periódicos parados",
            text: "Nenhum processo `fila scheduler` (ou `fila all`) está vivo (\(last)). Sem ele nenhuma verificação roda, mensagens de workers perdidos não voltam à fila e nada é limpo. Inicie um scheduler e confira `SELECT * FROM ops.workers;`."
                + (schedulers.isEmpty ? "" : "\n" + schedulers.map { "• " + $0.line }.joined(separator: "\n")),
            fields: [
                .init("Último heartbeat", everSeen ? "há \(minutesAndSeconds(silentSeconds))" : "nunca"),
                .init("Detectado por", "\(watcher.kind.rawValue) \(watcher.id)"),
            ],
            details: [
                "segundos_sem_scheduler": .integer(silentSeconds),
                "schedulers": .array(schedulers.map(\.json)),
                "detectado_por": .string(watcher.id),
            ]
        )
    }

    static func minutesAndSeconds(_ seconds: Int) -> String {
        seconds < 60 ? "\(seconds) s" : seconds < 7200 ? "\(seconds / 60) min \(seconds % 60) s" : "\(seconds / 3600) h \(seconds % 3600 / 60) min"
    }
}

/// The text of `job_atrasado`.
enum LateJobAlert {
    static let rule = "job_atrasado"
    static let cooldown = Duration.seconds(3600)

    static func alert(
        job: String, schedule: String, lateAfterSeconds: Int, slaSeconds: Int, secondsSinceSuccess: Int, everSucceeded: Bool,
        lastStatus: String, lastError: String, runningSeconds: Int?, schedulers: [SchedulerAlerts.SchedulerBeat]
    ) -> Alert {
        let overSLA = runningSeconds.map { $0 > slaSeconds } ?? false
        let since = NoSchedulerAlert.minutesAndSeconds(secondsSinceSuccess)
        let problem = overSLA
            ? "está rodando há \(NoSchedulerAlert.minutesAndSeconds(runningSeconds ?? 0)), acima do SLA de \(NoSchedulerAlert.minutesAndSeconds(slaSeconds))"
            : everSucceeded
                ? "não tem sucesso há \(since) (limite \(NoSchedulerAlert.minutesAndSeconds(lateAfterSeconds)))"
                : "nunca teve sucesso desde que foi definido há \(since) (limite \(NoSchedulerAlert.minutesAndSeconds(lateAfterSeconds)))"
        var fields: [Alert.Field] = [
            .init("Agenda", schedule),
            .init("Última execução", lastStatus.isEmpty ? "nenhuma" : lastStatus),
        ]
        if !lastError.isEmpty { fields.append(.init("Último erro", String(lastError.prefix(300)))) }
        return Alert(
            rule: rule,
            key: job,
            title: overSLA ? "Job \(job) acima do SLA" : "Job \(job) atrasado",
            text: "O job `\(job)` \(problem). Veja `SELECT * FROM job_executions WHERE job_name = '\(job)' ORDER BY created_at DESC LIMIT 5;`. Schedulers:\n"
                + schedulers.map { "• " + $0.line }.joined(separator: "\n"),
            fields: fields,
            details: [
                "job": .string(job),
                "segundos_sem_sucesso": .integer(secondsSinceSuccess),
                "limite_segundos": .integer(lateAfterSeconds),
                "sla_segundos": .integer(slaSeconds),
                "rodando_segundos": runningSeconds.map { .integer($0) } ?? .null,
                "ultimo_status": lastStatus.isEmpty ? .null : .string(lastStatus),
                "schedulers": .array(schedulers.map(\.json)),
            ]
        )
    }
}
