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
import Queue

/// The maintenance jobs every Fila installation runs. Their results are JSON objects in
/// `job_executions.result`; the checks also report their conditions to the `AlertStore`
/// (rules `fila_acumulada` and `worker_sem_heartbeat`), which notifies Slack.
public enum BuiltinJobs {
    public struct Settings: Sendable {
        /// Cron schedules are evaluated here (the TZ setting).
        public var timeZone: TimeZone
        /// Pending messages due longer than `backlogAge` above `backlogLimit` are a backlog (T01.5).
        public var backlogLimit: Int
        public var backlogAge: Duration
        /// Metric snapshots are kept this long (T03.2).
        public var metricsRetention: Duration
        /// Ended messages older than this move to fila_mensagens_arquivo.
        public var archiveAfter: Duration
        public var archiveBatchSize: Int
        /// Circuit transitions are kept this long (the breakers' audit trail).
        public var circuitHistoryRetention: Duration
        /// Rate-limit windows are kept this many days after they end.
        public var rateLimitRetentionDays: Int

        public init(
            timeZone: TimeZone,
            backlogLimit: Int = 50,
            backlogAge: Duration = .seconds(1800),
            metricsRetention: Duration = .seconds(7 * 86_400),
            archiveAfter: Duration = .seconds(30 * 86_400),
            archiveBatchSize: Int = 5000,
            circuitHistoryRetention: Duration = .seconds(90 * 86_400),
            rateLimitRetentionDays: Int = 7
        ) {
            self.timeZone = timeZone
            self.backlogLimit = backlogLimit
            self.backlogAge = backlogAge
            self.metricsRetention = metricsRetention
            self.archiveAfter = archiveAfter
            self.archiveBatchSize = archiveBatchSize
            self.circuitHistoryRetention = circuitHistoryRetention
            self.rateLimitRetentionDays = rateLimitRetentionDays
        }
    }

    public static func all(settings: Settings) -> [JobDefinition] {
        let zone = settings.timeZone
        return [
            JobDefinition(
                name: "resgatar-workers-perdidos",
                schedule: .every(seconds: 60),
                description: "Returns to the queue the messages of workers that stopped heart-beating, once a process has beaten without a gap for the whole timeout (T01.1)",
                sla: .seconds(30)
            ) { context in
                let rescue = try await MessageQueue(client: context.client)
                    .rescueLostWorkers(logger: context.logger)
                return ["rescued": .integer(rescue.rescued), "judged": .bool(rescue.judged)]
            },
            JobDefinition(
                name: "resetar-fila-travada",
                schedule: .every(seconds: 900),
                description: "Returns to the queue the messages processing for over 60 minutes, an attempt burned, and those of workers that stopped heart-beating (T01.1)",
                sla: .seconds(60)
            ) { context in
                let queue = MessageQueue(client: context.client)
                let rescue = try await queue.rescueLostWorkers(logger: context.logger)
                let reset = try await queue.resetStuck(logger: context.logger)
                return ["rescued": .integer(rescue.rescued), "judged": .bool(rescue.judged), "reset": .integer(reset)]
            },
            JobDefinition(
                name: "limpar-fila-antiga",
                schedule: .cron(try! CronExpression("0 3 * * *"), timeZone: zone),
                description: "Cancels messages pending for over 24 hours as FAILED_EXPIRED (T01.2)",
                sla: .seconds(300)
            ) { context in
                ["expired": .integer(try await MessageQueue(client: context.client).expireOld(logger: context.logger))]
            },
            JobDefinition(
                name: "verificar-fila-acumulada",
                schedule: .every(seconds: 600),
                description: "Reports a backlog (alert fila_acumulada): more than 50 messages due for over 30 minutes, unless app_settings alert.fila_acumulada.* says otherwise (T01.5)",
                sla: .seconds(30)
            ) { context in
                try await checkBacklog(context, settings: settings)
            },
            JobDefinition(
                name: "verificar-erros-acumulados",
                schedule: .every(seconds: 60),
                description: "Reports recent send errors by outcome and reason (alert erros_acumulados: more than 10 in 5 minutes, T03.3) and every message that ended unsent (alert mensagens_nao_enviadas)",
                sla: .seconds(30)
            ) { context in
                try await checkErrors(context)
            },
            JobDefinition(
                name: "snapshot-metricas",
                schedule: .every(seconds: 300),
                description: "Samples the queue metrics, and the sends and provider failures since the last run by provider, into metrics_snapshots (T03.2)",
                sla: .seconds(30)
            ) { context in
                try await snapshotMetrics(context, settings: settings)
            },
            JobDefinition(
                name: "limpar-metricas-antigas",
                schedule: .cron(try! CronExpression("30 3 * * *"), timeZone: zone),
                description: "Deletes metric snapshots older than 7 days (T03.2)",
                sla: .seconds(300)
            ) { context in
                try await deleteOldSnapshots(context, settings: settings)
            },
            JobDefinition(
                name: "limpar-resiliencia-antiga",
                schedule: .cron(try! CronExpression("45 3 * * *"), timeZone: zone),
                description: "Deletes circuit transitions and chip failure counts older than 90 days, and rate-limit windows older than 7 days",
                sla: .seconds(300)
            ) { context in
                try await deleteOldResilienceRows(context, settings: settings)
            },
            JobDefinition(
                name: "limpar-historico",
                schedule: .cron(try! CronExpression("15 4 * * *"), timeZone: zone),
                description: "Deletes job runs older than 30 days (each job's latest run and latest success kept), heartbeats of processes gone for over a day, delivered alert events and ops_audit rows older than a year; app_settings retention.* says otherwise",
                sla: .seconds(600)
            ) { context in
                try await deleteOldHistory(context)
            },
            JobDefinition(
                name: "verificar-jobs-atrasados",
                schedule: .every(seconds: 60),
                description: "Reports jobs whose last success is older than twice their interval, and runs over their SLA (T03.6)",
                sla: .seconds(30)
            ) { context in
                try await checkLateJobs(context)
            },
            JobDefinition(
                name: "verificar-heartbeats",
                schedule: .every(seconds: 60),
                description: "Reports processes silent for over the heartbeat timeout (2 minutes unless app_settings says otherwise), and a queue with no live worker while messages are due (alert worker_sem_heartbeat, T01.6)",
                sla: .seconds(30)
            ) { context in
                try await checkHeartbeats(context, settings: settings)
            },
            JobDefinition(
                name: "arquivar-fila",
                schedule: .cron(try! CronExpression("0 4 * * *"), timeZone: zone),
                description: "Moves ended messages older than 30 days to fila_mensagens_arquivo, in batches",
                sla: .seconds(1800),
                timeout: .seconds(3600)
            ) { context in
                try await archive(context, settings: settings)
            },
        ]
    }

    static func checkBacklog(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        let alerts = AlertStore(client: context.client)
        let rule = try await alerts.settings(for: BacklogAlert.rule, logger: context.logger)
        let limit = rule.integer("limit", default: settings.backlogLimit, in: 0...10_000_000)
        let age = Duration.seconds(60 * rule.integer("minutes", default: Int(settings.backlogAge.seconds / 60), in: 0...10_080))
        let (count, oldest) = try await context.client.withTransaction(logger: context.logger) { connection in
            // The planner cannot know how few priorities wait nor how few of their rows are
            // overdue, so it prices this at hundreds of thousands and compiles it with JIT:
            // 20-250 ms to read a few dozen pages.
            try await connection.query("SET LOCAL jit = off", logger: context.logger)
            return try await connection.query(
                """
                SELECT coalesce(sum(overdue.count), 0)::bigint,
                       coalesce(floor(extract(epoch FROM now() - min(overdue.oldest)) / 60), 0)::bigint
                  FROM fila_mensagens_pending_priorities() p
                 CROSS JOIN LATERAL (
                       -- Per priority, a range of the pending index ending at the cutoff: rows
                       -- scheduled for later are never read.
                       SELECT count(*) AS count, min(f.agendar_para) AS oldest
                         FROM fila_mensagens f
                        WHERE f.status = 'pendente' AND f.prioridade = p.prioridade
                          AND f.agendar_para < now() - make_interval(secs => \(age.seconds))) overdue
                """,
                logger: context.logger
            ).collect().first!.decode((Int, Int).self)
        }
        let backlog = count > limit
        let minutes = Int(age.seconds / 60)
        if backlog {
            context.logger.warning("queue backlog", metadata: ["fila.overdue": .stringConvertible(count), "fila.oldest_minutes": .stringConvertible(oldest)])
        }
        try await alerts.report(
            rule: BacklogAlert.rule,
            firing: backlog ? [BacklogAlert.alert(overdue: count, oldestMinutes: oldest, limit: limit, minutes: minutes)] : [],
            cooldown: rule.cooldown(default: BacklogAlert.cooldown),
            resolveAfter: rule.resolveAfter(),
            logger: context.logger
        )
        return [
            "acumulada": .bool(backlog),
            "pendentes_atrasadas": .integer(count),
            "mensagem_mais_antiga_minutos": .integer(oldest),
            "limite": .integer(limit),
            "minutos": .integer(minutes),
        ]
    }

    static func snapshotMetrics(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        let count = try await context.client.query(
            """
            WITH m AS (SELECT * FROM ops.fila_metricas),
                 w AS (SELECT count(*) AS vivos FROM worker_heartbeats h
                        WHERE h.kind IN ('worker', 'all') AND fila_process_alive(h)),
                 inserted AS (
                INSERT INTO metrics_snapshots (metric_name, value)
                SELECT name, value FROM m, w, LATERAL (VALUES
                    ('fila_pendentes', m.pendentes::numeric),
                    ('fila_processando', m.processando::numeric),
                    ('fila_enviadas_ultima_hora', m.enviadas_ultima_hora::numeric),
                    ('fila_erros_ultima_hora', m.erros_ultima_hora::numeric),
                    ('fila_tempo_medio_processamento_ms', m.tempo_medio_processamento_ms::numeric),
                    ('fila_mensagem_mais_antiga_minutos', m.mensagem_mais_antiga_minutos::numeric),
                    ('workers_vivos', w.vivos::numeric)
                ) AS v(name, value)
                WHERE value IS NOT NULL
                RETURNING 1)
            SELECT count(*) FROM inserted
            """,
            logger: context.logger
        ).collect().first!.decode(Int.self)
        let sends = try await snapshotSends(context)
        return ["snapshots": .integer(count), "snapshots_envios": .integer(sends)]
    }

    /// Sends and provider failures whose outcome was written since the previous run (at most
    /// an hour back; 5 minutes on the first run), by provider: `mensagens_enviadas{provider}`
    /// and `mensagens_falhadas{provider,outcome}`, plus `mensagens_janela_segundos`, the
    /// window's length, which also marks where the next window starts.
    ///
    /// Counted from `fila_mensagens` rows, not from in-process counters: the scheduler that
    /// runs this sends nothing, the workers that do are many and restart, and the rows are
    /// the one record every process writes. A row holds its last attempt's outcome, so a
    /// message that failed and was then sent in one window counts once, as sent; a failure
    /// whose retry comes in a later window counts in both. The failing provider of a row is
    /// its reason code's prefix (`evolution:http_500`).
    static func snapshotSends(_ context: JobContext) async throws -> Int {
        try await context.client.query(
            """
            WITH janela AS (
                SELECT greatest(
                           coalesce((SELECT max(created_at) FROM metrics_snapshots
                                      WHERE metric_name = 'mensagens_janela_segundos'),
                                    now() - interval '5 minutes'),
                           now() - interval '1 hour') AS desde),
                 contagens AS (
                SELECT CASE WHEN f.outcome = 'SENT' THEN 'mensagens_enviadas' ELSE 'mensagens_falhadas' END AS name,
                       coalesce(nullif(f.provider, ''), nullif(split_part(f.outcome_reason_code, ':', 1), ''), 'desconhecido') AS provider,
                       f.outcome, count(*) AS n
                  FROM fila_mensagens f, janela j
                 WHERE f.outcome IS NOT NULL AND f.outcome_at > j.desde
                   AND f.outcome IN ('SENT', 'FAILED_PROVIDER', 'FAILED_TIMEOUT', 'FAILED_VALIDATION')
                 GROUP BY 1, 2, 3),
                 inserted AS (
                INSERT INTO metrics_snapshots (metric_name, value, labels)
                SELECT name, n, CASE WHEN name = 'mensagens_enviadas' THEN jsonb_build_object('provider', provider)
                                     ELSE jsonb_build_object('provider', provider, 'outcome', outcome) END
                  FROM contagens
                UNION ALL
                SELECT 'mensagens_janela_segundos', round(extract(epoch FROM now() - j.desde)::numeric, 3), '{}'::jsonb
                  FROM janela j
                RETURNING 1)
            SELECT count(*) FROM inserted
            """,
            logger: context.logger
        ).collect().first!.decode(Int.self)
    }

    static func deleteOldSnapshots(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        let removed = try await deleteRows(of: .metricsSnapshots, olderThan: settings.metricsRetention, context)
        return ["removidas": .integer(removed)]
    }

    static func deleteOldResilienceRows(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        let transitions = try await deleteRows(of: .circuitTransitions, olderThan: settings.circuitHistoryRetention, context)
        let windows = try await inBatches(of: 10_000) { size in
            try await context.client.query(
                """
                WITH gone AS (
                    DELETE FROM rate_limit_counters
                     WHERE (cliente_id, janela) IN (
                           SELECT cliente_id, janela FROM rate_limit_counters
                            WHERE janela < current_date - \(Int32(clamping: settings.rateLimitRetentionDays))
                            LIMIT \(size))
                    RETURNING 1)
                SELECT count(*) FROM gone
                """,
                logger: context.logger
            ).collect().first!.decode(Int.self)
        }
        // A few rows per chip and hour: one statement.
        let chipFailures = try await context.client.query(
            """
            WITH gone AS (
                DELETE FROM chip_falhas WHERE hora < now() - make_interval(secs => \(settings.circuitHistoryRetention.seconds))
                RETURNING 1)
            SELECT count(*) FROM gone
            """,
            logger: context.logger
        ).collect().first!.decode(Int.self)
        return [
            "transicoes_removidas": .integer(transitions), "janelas_removidas": .integer(windows),
            "falhas_de_chip_removidas": .integer(chipFailures),
        ]
    }

    /// Tables keyed by `id` whose rows age out by `created_at`. The names go into SQL as
    /// identifiers, so they come from here and nowhere else.
    enum AgedTable: String {
        case metricsSnapshots = "metrics_snapshots"
        case circuitTransitions = "circuit_transitions"
    }

    /// Deletes `table`'s rows created more than `age` ago, in batches; returns how many.
    static func deleteRows(of table: AgedTable, olderThan age: Duration, _ context: JobContext) async throws -> Int {
        try await inBatches(of: 10_000) { size in
            try await context.client.query(
                """
                WITH gone AS (
                    DELETE FROM \(unescaped: table.rawValue)
                     WHERE id IN (SELECT id FROM \(unescaped: table.rawValue)
                                   WHERE created_at < now() - make_interval(secs => \(age.seconds))
                                   LIMIT \(size))
                    RETURNING 1)
                SELECT count(*) FROM gone
                """,
                logger: context.logger
            ).collect().first!.decode(Int.self)
        }
    }

    /// Runs `batch` (which handles at most `size` rows and says how many) until a batch
    /// comes back short or the run is cancelled; returns the total. Short transactions keep
    /// locks and bloat small on tables the workers are using.
    static func inBatches(of size: Int, _ batch: (Int) async throws -> Int) async throws -> Int {
        var total = 0
        while !Task.isCancelled {
            let done = try await batch(size)
            total += done
            if done < size { break }
        }
        return total
    }

    static func checkLateJobs(_ context: JobContext) async throws -> JSONValue {
        var late: [JSONValue] = []
        let rows = try await context.client.query(
            """
            SELECT d.name, s.last_success,
                   floor(extract(epoch FROM now() - coalesce(s.last_success, d.created_at)))::bigint, d.late_after_seconds
              FROM job_definitions d
              LEFT JOIN LATERAL (SELECT max(finished_at) AS last_success FROM job_executions e
                                  WHERE e.job_name = d.name AND e.status = 'success') s ON true
             WHERE d.enabled
               AND coalesce(s.last_success, d.created_at) < now() - make_interval(secs => d.late_after_seconds)
             ORDER BY d.name
            """,
            logger: context.logger
        )
        for try await (name, lastSuccess, age, limit) in rows.decode((String, Date?, Int, Int).self) {
            late.append([
                "job": .string(name),
                "ultimo_sucesso": lastSuccess.map { .string($0.formatted(.iso8601)) } ?? .null,
                "segundos_sem_sucesso": .integer(age),
                "limite_segundos": .integer(limit),
            ])
        }
        var overSLA: [JSONValue] = []
        let running = try await context.client.query(
            """
            SELECT e.job_name, floor(extract(epoch FROM now() - e.started_at))::bigint, d.sla_seconds
              FROM job_executions e JOIN job_definitions d ON d.name = e.job_name
             WHERE e.status = 'running' AND e.started_at < now() - make_interval(secs => d.sla_seconds)
             ORDER BY e.started_at
            """,
            logger: context.logger
        )
        for try await (name, seconds, sla) in running.decode((String, Int, Int).self) {
            overSLA.append(["job": .string(name), "rodando_segundos": .integer(seconds), "sla_segundos": .integer(sla)])
        }
        if !late.isEmpty || !overSLA.isEmpty {
            context.logger.warning("late jobs", metadata: ["jobs.late": .stringConvertible(late.count), "jobs.over_sla": .stringConvertible(overSLA.count)])
        }
        return ["atrasados": .array(late), "acima_do_sla": .array(overSLA)]
    }

    static func checkHeartbeats(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        var silent: [JSONValue] = []
        var liveWorkers = 0
        let rows = try await context.client.query(
            """
            SELECT h.id, h.kind, floor(extract(epoch FROM now() - h.last_seen_at))::bigint, fila_process_alive(h)
              FROM worker_heartbeats h
             WHERE h.status <> 'stopped'
             ORDER BY h.last_seen_at
            """,
            logger: context.logger
        )
        for try await (id, kind, age, alive) in rows.decode((String, String, Int, Bool).self) {
            if alive {
                if kind == "worker" || kind == "all" { liveWorkers += 1 }
            } else {
                silent.append(["id": .string(id), "kind": .string(kind), "segundos_sem_heartbeat": .integer(age)])
            }
        }
        if liveWorkers == 0 {
            context.logger.warning("no worker is running: nothing is sending messages")
        }
        var result: [String: JSONValue] = ["sem_heartbeat": .array(silent), "workers_vivos": .integer(liveWorkers), "sem_worker": .bool(liveWorkers == 0)]

        // The January incident: no live worker while messages are due. Only then is the queue
        // read, so a healthy installation pays nothing for this rule.
        let alerts = AlertStore(client: context.client)
        let rule = try await alerts.settings(for: NoWorkerAlert.rule, logger: context.logger)
        var firing: [Alert] = []
        if liveWorkers == 0 {
            let due = rule.integer("due_seconds", default: NoWorkerAlert.dueSeconds, in: 0...86_400)
            let (count, oldest, lastBeat) = try await context.client.withTransaction(logger: context.logger) { connection in
                try await connection.query("SET LOCAL jit = off", logger: context.logger)
                var found: (Int, Int?, Int?) = (0, nil, nil)
                let rows = try await connection.query(
                    """
                    SELECT coalesce(sum(d.count), 0)::bigint,
                           floor(extract(epoch FROM now() - min(d.oldest)))::bigint,
                           (SELECT floor(extract(epoch FROM now() - max(h.last_seen_at)))::bigint
                              FROM worker_heartbeats h WHERE h.kind IN ('worker', 'all'))
                      FROM fila_mensagens_pending_priorities() p
                     CROSS JOIN LATERAL (
                           SELECT count(*) AS count, min(f.agendar_para) AS oldest
                             FROM fila_mensagens f
                            WHERE f.status = 'pendente' AND f.prioridade = p.prioridade
                              AND f.agendar_para <= now() - make_interval(secs => \(due))) d
                    """,
                    logger: context.logger
                )
                for try await row in rows.decode((Int, Int?, Int?).self) { found = row }
                return found
            }
            result["pendentes_vencidas"] = .integer(count)
            if count > 0 {
                firing.append(NoWorkerAlert.alert(due: count, oldestSeconds: oldest ?? 0, lastWorkerBeatSeconds: lastBeat, silent: silent))
            }
        }
        try await alerts.report(
            rule: NoWorkerAlert.rule, firing: firing, cooldown: rule.cooldown(default: NoWorkerAlert.cooldown),
            resolveAfter: rule.resolveAfter(), logger: context.logger
        )
        result["alerta"] = .bool(!firing.isEmpty)
        return .object(result)
    }

    /// The columns moved to fila_mensagens_arquivo, by name, so values never shift between
    /// columns. A migration that adds a column to fila_mensagens adds it to the archive and
    /// to this list too (the archive test compares the two tables' columns).
    public static let archivedColumns = """
        id, cliente_id, telefone, conteudo, tipo, prioridade, status, tentativas, max_tentativas, agendar_para,
        processando_desde, worker_id, outcome, outcome_reason_code, outcome_at, ultimo_erro, chip_id, provider,
        provider_message_id, idempotency_key, correlation_id, metadata, created_at, updated_at, enviada_em,
        guardrail_bypass_motivo, guardrail_bypass_por, guardrail_bypass_em
        """

    static func archive(_ context: JobContext, settings: Settings) async throws -> JSONValue {
        let archived = try await inBatches(of: settings.archiveBatchSize) { size in
            try await context.client.query(
                """
                WITH moved AS (
                    DELETE FROM fila_mensagens
                     WHERE id IN (SELECT id FROM fila_mensagens
                                   WHERE outcome IS NOT NULL
                                     AND outcome_at < now() - make_interval(secs => \(settings.archiveAfter.seconds))
                                     AND status IN ('enviada', 'erro', 'cancelada')
                                   ORDER BY outcome_at
                                   LIMIT \(size)
                                   FOR UPDATE SKIP LOCKED)
                    RETURNING \(unescaped: archivedColumns)),
                 archived AS (
                    INSERT INTO fila_mensagens_arquivo (\(unescaped: archivedColumns), arquivada_em)
                    SELECT \(unescaped: archivedColumns), now() FROM moved
                    RETURNING 1)
                SELECT count(*) FROM archived
                """,
                logger: context.logger
            ).collect().first!.decode(Int.self)
        }
        return ["arquivadas": .integer(archived)]
    }
}
