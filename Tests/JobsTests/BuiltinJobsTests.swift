import Database
import FilaTestSupport
import Foundation
import Jobs
import Logging
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// Each maintenance job run for real (`runNow`) against rows set up with past timestamps.
@Suite("Built-in maintenance jobs", .migratedDatabase)
struct BuiltinJobsTests {
    private let settings = BuiltinJobs.Settings(timeZone: TimeZone(identifier: "America/Sao_Paulo")!, archiveBatchSize: 3)

    /// The built-in jobs synced into the test's database, a live `cli` process to run them as,
    /// and a function that runs one by name and expects it to succeed.
    private func builtinJobs() async throws -> (PostgresClient, @Sendable (String) async throws -> JobExecution) {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let catalog = try JobCatalog(BuiltinJobs.all(settings: settings))
        try await catalog.sync(client: client, logger: logger)
        try await client.query("INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('cli-1', 'cli', 't', 1, 't')", logger: logger)
        let runner = JobRunner(client: client, lockURL: url, workerID: "cli-1")
        return (client, { name in
            guard case .finished(let execution) = try await runner.runNow(catalog[name]!, trigger: .cli, logger: logger) else {
                throw TestSetupError("\(name) did not run")
            }
            #expect(execution.status == .success, "\(execution.error ?? "")")
            return execution
        })
    }

    private func execute(_ client: PostgresClient, _ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    private func int(_ client: PostgresClient, _ sql: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(Int.self)
    }

    private func insertMessages(_ client: PostgresClient, count: Int, set: String = "") async throws {
        try await execute(
            client,
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x', 'campanha' FROM generate_series(1, \(count)) i
            """
        )
        if !set.isEmpty { try await execute(client, "UPDATE fila_mensagens SET \(set)") }
    }

    @Test func theBacklogCheckCountsMessagesDueForOverHalfAnHour() async throws {
        let (client, run) = try await builtinJobs()
        try await insertMessages(client, count: 51, set: "agendar_para = now() - interval '45 minutes'")
        try await insertMessages(client, count: 10)  // due just now: not overdue
        let backlog = try await run("verificar-fila-acumulada")
        #expect(backlog.result == ["acumulada": true, "pendentes_atrasadas": 51, "mensagem_mais_antiga_minutos": 45, "limite": 50, "minutos": 30])
        try await execute(client, "UPDATE fila_mensagens SET status = 'cancelada', outcome = 'CANCELLED_MANUAL', outcome_at = now() WHERE cliente_id = 'medico-1' AND agendar_para < now() - interval '1 minute'")
        #expect(try await run("verificar-fila-acumulada").result?["acumulada"] == false)
    }

    @Test func theBacklogCheckAddsUpEveryPriorityAndIgnoresRowsDueLater() async throws {
        let (client, run) = try await builtinJobs()
        try await execute(
            client,
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, prioridade, agendar_para)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x', 'campanha', (ARRAY[10, 0, -5])[1 + i % 3],
                   CASE WHEN i <= 60 THEN now() - interval '40 minutes' - i * interval '1 second'
                        WHEN i <= 70 THEN now() - interval '10 minutes'
                        ELSE now() + interval '10 hours' END
              FROM generate_series(1, 5070) i
            """
        )
        // The most overdue row is at priority 0, below the rows of priority 10.
        try await execute(client, "UPDATE fila_mensagens SET agendar_para = now() - interval '90 minutes' WHERE cliente_id = 'medico-1'")
        let backlog = try await run("verificar-fila-acumulada")
        #expect(backlog.result == ["acumulada": true, "pendentes_atrasadas": 60, "mensagem_mais_antiga_minutos": 90, "limite": 50, "minutos": 30])
    }

    @Test func stuckAndExpiredMessagesAreHandled() async throws {
        let (client, run) = try await builtinJobs()
        try await insertMessages(client, count: 2, set: "created_at = now() - interval '25 hours', updated_at = now() - interval '25 hours', agendar_para = now() - interval '25 hours'")
        try await insertMessages(client, count: 1)
        try await execute(
            client,
            "UPDATE fila_mensagens SET status = 'processando', processando_desde = now() - interval '61 minutes', worker_id = 'cli-1' WHERE ctid = (SELECT ctid FROM fila_mensagens WHERE created_at > now() - interval '1 hour' LIMIT 1)"
        )
        #expect(try await run("resetar-fila-travada").result == ["rescued": 0, "judged": false, "reset": 1])
        #expect(try await run("limpar-fila-antiga").result == ["expired": 2])
        #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE outcome = 'FAILED_EXPIRED' AND status = 'cancelada'") == 2)
    }

    @Test func oldCircuitTransitionsRateLimitWindowsAndChipFailuresAreDeleted() async throws {
        let (client, run) = try await builtinJobs()
        try await execute(client, """
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, created_at) VALUES
                ('evolution', 'CLOSED', 'OPEN', 'old', now() - interval '91 days'),
                ('evolution', 'OPEN', 'HALF_OPEN', 'old', now() - interval '91 days'),
                ('evolution', 'HALF_OPEN', 'CLOSED', 'recent', now() - interval '89 days')
            """)
        try await execute(client, """
            INSERT INTO rate_limit_counters (cliente_id, janela, usado) VALUES
                ('medico-1', current_date - 8, 3), ('medico-1', current_date - 7, 3), ('medico-1', current_date, 1)
            """)
        try await execute(client, """
            INSERT INTO chip_falhas (chip_id, hora, outcome, falhas) VALUES
                ('chip-1', date_trunc('hour', now() - interval '91 days'), 'FAILED_PROVIDER', 4),
                ('chip-1', date_trunc('hour', now() - interval '89 days'), 'FAILED_PROVIDER', 2)
            """)
        #expect(
            try await run("limpar-resiliencia-antiga").result
                == ["transicoes_removidas": 2, "janelas_removidas": 1, "falhas_de_chip_removidas": 1]
        )
        #expect(try await int(client, "SELECT count(*) FROM circuit_transitions") == 1)
        #expect(try await int(client, "SELECT count(*) FROM rate_limit_counters") == 2)
        #expect(try await int(client, "SELECT sum(falhas) FROM chip_falhas") == 2)
    }

    /// `limpar-historico`: job runs, heartbeats and alert events past their retention go; what
    /// the scheduler, the late-job alert, the rescue and the delivery still read stays; the
    /// settings in `app_settings` move the limits, and an unusable one is named.
    @Test func historyPastItsRetentionIsDeleted() async throws {
        let (client, run) = try await builtinJobs()
        try await execute(client, """
            INSERT INTO job_executions (job_name, scheduled_for, created_at, started_at, finished_at, status, triggered_by) VALUES
                ('semanal', now() - interval '60 days', now() - interval '60 days', now() - interval '60 days', now() - interval '60 days', 'success', 'scheduler'),
                ('diario', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days', 'success', 'scheduler'),
                ('diario', now() - interval '35 days', now() - interval '35 days', now() - interval '35 days', now() - interval '35 days', 'failed', 'scheduler'),
                ('diario', now() - interval '10 days', now() - interval '10 days', now() - interval '10 days', now() - interval '10 days', 'success', 'scheduler'),
                ('instavel', now() - interval '50 days', now() - interval '50 days', now() - interval '50 days', now() - interval '50 days', 'success', 'scheduler'),
                ('instavel', now() - interval '45 days', now() - interval '45 days', now() - interval '45 days', now() - interval '45 days', 'failed', 'scheduler'),
                ('instavel', now() - interval '5 days', now() - interval '5 days', now() - interval '5 days', now() - interval '5 days', 'failed', 'scheduler'),
                ('pendurado', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days', NULL, 'running', 'scheduler'),
                ('pendurado', now() - interval '39 days', now() - interval '39 days', now() - interval '39 days', now() - interval '39 days', 'failed', 'scheduler')
            """)
        try await execute(client, """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at, status) VALUES
                ('parado-ha-dias', 'worker', 't', 2, 't', now() - interval '2 days', 'stopped'),
                ('morto-com-linha', 'worker', 't', 3, 't', now() - interval '2 days', 'running'),
                ('parado-agora', 'worker', 't', 4, 't', now() - interval '1 hour', 'stopped')
            """)
        try await insertMessages(client, count: 1, set: "status = 'processando', worker_id = 'morto-com-linha', processando_desde = now() - interval '2 days'")
        try await execute(client, "INSERT INTO alert_state (rule, key) VALUES ('fila_acumulada', '')")
        try await execute(client, """
            INSERT INTO alert_events (rule, key, kind, title, text, status, sent_at, created_at) VALUES
                ('fila_acumulada', '', 'firing', 'velho', 't', 'sent', now() - interval '400 days', now() - interval '400 days'),
                ('fila_acumulada', '', 'firing', 'pendente', 't', 'pending', NULL, now() - interval '400 days'),
                ('fila_acumulada', '', 'resolved', 'recente', 't', 'disabled', NULL, now() - interval '100 days')
            """)

        try await execute(client, """
            INSERT INTO ops_audit (acao, motivo, linhas, feito_em) VALUES
                ('cancel', 'old', 1, now() - interval '366 days'), ('cancel', 'recent', 1, now() - interval '364 days')
            """)
        #expect(
            try await run("limpar-historico").result
                == ["execucoes_removidas": 3, "heartbeats_removidos": 1, "alertas_removidos": 1, "auditoria_removida": 1]
        )
        #expect(try await int(client, "SELECT count(*) FROM ops_audit WHERE motivo = 'recent'") == 1)
        // Each job's latest run and latest success, and the open run, stay.
        let runs = try await client.query(
            "SELECT job_name || ':' || status || ':' || extract(day FROM now() - created_at)::int FROM job_executions WHERE job_name <> 'limpar-historico' ORDER BY 1",
            logger: logger
        ).collect().map { try $0.decode(String.self) }
        #expect(runs == ["diario:success:10", "instavel:failed:5", "instavel:success:50", "pendurado:failed:39", "pendurado:running:40", "semanal:success:60"])
        #expect(try await int(client, "SELECT count(*) FROM worker_heartbeats WHERE id IN ('morto-com-linha', 'parado-agora', 'cli-1')") == 3)
        #expect(try await int(client, "SELECT count(*) FROM worker_heartbeats") == 3)
        #expect(try await int(client, "SELECT count(*) FROM alert_events WHERE title IN ('pendente', 'recente')") == 2)
        #expect(try await int(client, "SELECT count(*) FROM alert_events") == 2)

        // Shorter limits from app_settings; an unusable value keeps its default and is named.
        try await execute(client, """
            INSERT INTO app_settings (key, value) VALUES
                ('retention.alert_events_days', '90'), ('retention.worker_heartbeats_hours', '"soon"'),
                ('retention.job_executions_days', '0')
            """)
        #expect(
            try await run("limpar-historico").result
                == [
                    "execucoes_removidas": 0, "heartbeats_removidos": 0, "alertas_removidos": 1, "auditoria_removida": 0,
                    "configuracoes_ignoradas": ["retention.job_executions_days", "retention.worker_heartbeats_hours"],
                ]
        )
        #expect(try await int(client, "SELECT count(*) FROM alert_events") == 1)
    }

    @Test func snapshotsAreTakenAndOldOnesDeleted() async throws {
        let (client, run) = try await builtinJobs()
        try await insertMessages(client, count: 4)
        // No sends yet: no mean time, and only the send window's own row.
        #expect(try await run("snapshot-metricas").result == ["snapshots": 6, "snapshots_envios": 1])
        #expect(try await int(client, "SELECT value::int FROM metrics_snapshots WHERE metric_name = 'fila_pendentes'") == 4)
        #expect(try await int(client, "SELECT value::int FROM metrics_snapshots WHERE metric_name = 'workers_vivos'") == 0)
        try await execute(client, "UPDATE metrics_snapshots SET created_at = now() - interval '8 days' WHERE metric_name <> 'workers_vivos'")
        #expect(try await run("limpar-metricas-antigas").result == ["removidas": 6])
        #expect(try await int(client, "SELECT count(*) FROM metrics_snapshots") == 1)
    }

    /// Sends and provider failures are counted from the rows whose outcome was written since
    /// the previous snapshot, by provider, whichever process sent them.
    @Test func sendsAreSnapshottedByProviderSinceTheLastSnapshot() async throws {
        let (client, run) = try await builtinJobs()
        func insert(_ count: Int, status: String, outcome: String, provider: String?, reason: String?, ago: String) async throws {
            let sent = status == "enviada" ? "now() - interval '\(ago)'" : "NULL"
            try await execute(
                client,
                """
                INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_reason_code, outcome_at, provider, enviada_em)
                SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x', '\(status)', '\(outcome)', \(reason.map { "'\($0)'" } ?? "NULL"),
                       now() - interval '\(ago)', \(provider.map { "'\($0)'" } ?? "NULL"), \(sent)
                  FROM generate_series(1, \(count)) i
                """
            )
        }
        try await insert(3, status: "enviada", outcome: "SENT", provider: "evolution", reason: nil, ago: "1 minute")
        try await insert(2, status: "enviada", outcome: "SENT", provider: "zapi", reason: nil, ago: "2 minutes")
        try await insert(2, status: "pendente", outcome: "FAILED_PROVIDER", provider: nil, reason: "evolution:http_500", ago: "1 minute")
        try await insert(1, status: "erro", outcome: "FAILED_TIMEOUT", provider: nil, reason: "zapi:timeout", ago: "3 minutes")
        // Not provider outcomes, or before the first window (5 minutes): not counted.
        try await insert(4, status: "pendente", outcome: "FAILED_RATE_LIMIT", provider: nil, reason: "rate_limit:cliente_diario", ago: "1 minute")
        try await insert(5, status: "enviada", outcome: "SENT", provider: "evolution", reason: nil, ago: "20 minutes")

        #expect(try await run("snapshot-metricas").result?["snapshots_envios"] == 5)
        let query = "SELECT metric_name || ' ' || labels::text || ' ' || value::int FROM metrics_snapshots WHERE metric_name LIKE 'mensagens_%' ORDER BY 1"
        let rows = try await client.query(PostgresQuery(unsafeSQL: query), logger: logger).collect().map { try $0.decode(String.self) }
        #expect(rows == [
            #"mensagens_enviadas {"provider": "evolution"} 3"#,
            #"mensagens_enviadas {"provider": "zapi"} 2"#,
            #"mensagens_falhadas {"outcome": "FAILED_PROVIDER", "provider": "evolution"} 2"#,
            #"mensagens_falhadas {"outcome": "FAILED_TIMEOUT", "provider": "zapi"} 1"#,
            #"mensagens_janela_segundos {} 300"#,
        ])

        // The next window starts where this one ended: nothing is counted twice.
        try await execute(client, "UPDATE metrics_snapshots SET created_at = created_at - interval '30 seconds'")
        try await insert(1, status: "enviada", outcome: "SENT", provider: "zapi", reason: nil, ago: "10 seconds")
        #expect(try await run("snapshot-metricas").result?["snapshots_envios"] == 2)
        let latest = try await int(client, """
            SELECT value::int FROM metrics_snapshots WHERE metric_name = 'mensagens_enviadas'
             ORDER BY created_at DESC LIMIT 1
            """)
        #expect(latest == 1)
        #expect(try await int(client, "SELECT count(*) FROM metrics_snapshots WHERE metric_name = 'mensagens_enviadas'") == 3)
    }

    @Test func heartbeatsAndANoWorkerQueueAreReported() async throws {
        let (client, run) = try await builtinJobs()
        try await execute(
            client,
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at, status) VALUES
                ('w-silent', 'worker', 't', 2, 't', now() - interval '3 minutes', 'running'),
                ('w-stopped', 'worker', 't', 3, 't', now() - interval '3 hours', 'stopped')
            """
        )
        let silent = try await run("verificar-heartbeats")
        #expect(silent.result?["sem_worker"] == true)
        #expect(silent.result?["workers_vivos"] == 0)
        guard case .array(let silentOnes) = silent.result?["sem_heartbeat"], silentOnes.count == 1,
            case .integer(let seconds) = silentOnes[0]["segundos_sem_heartbeat"]
        else {
            Issue.record("unexpected \(String(describing: silent.result))")
            return
        }
        #expect(silentOnes[0]["id"] == "w-silent")
        #expect(silentOnes[0]["kind"] == "worker")
        #expect((180...240).contains(seconds))
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w-alive', 'all', 't', 4, 't')")
        #expect(try await run("verificar-heartbeats").result?["sem_worker"] == false)
    }

    @Test func lateJobsAndRunsOverTheirSLAAreReported() async throws {
        let (client, run) = try await builtinJobs()
        // Every job was synced now, so none is late yet except those made to look old.
        try await execute(client, "UPDATE job_definitions SET created_at = now() - interval '1 hour' WHERE name = 'snapshot-metricas'")
        try await execute(
            client,
            """
            INSERT INTO job_executions (job_name, scheduled_for, status, started_at, finished_at, triggered_by, worker_id)
            VALUES ('verificar-heartbeats', now() - interval '10 minutes', 'success', now() - interval '10 minutes', now() - interval '10 minutes', 'scheduler', 'cli-1'),
                   ('arquivar-fila', now() - interval '2 hours', 'running', now() - interval '2 hours', NULL, 'scheduler', 'cli-1')
            """
        )
        let report = try await run("verificar-jobs-atrasados")
        guard case .array(let late) = report.result?["atrasados"], case .array(let overSLA) = report.result?["acima_do_sla"] else {
            Issue.record("unexpected result \(String(describing: report.result))")
            return
        }
        #expect(late.map { $0["job"] } == ["snapshot-metricas", "verificar-heartbeats"])
        #expect(late.first?["limite_segundos"] == 600)
        #expect(late.first?["ultimo_sucesso"] == .null)
        #expect(overSLA.map { $0["job"] } == ["arquivar-fila"])
    }

    @Test func endedMessagesPastRetentionAreArchivedInBatches() async throws {
        let (client, run) = try await builtinJobs()
        try await insertMessages(client, count: 7, set: "status = 'enviada', outcome = 'SENT', enviada_em = now(), outcome_at = now() - interval '31 days'")
        try await insertMessages(client, count: 2)  // pending: stays
        try await execute(client, "UPDATE fila_mensagens SET outcome_at = now() - interval '29 days' WHERE cliente_id = 'medico-7'")
        #expect(try await run("arquivar-fila").result == ["arquivadas": 6])
        #expect(try await int(client, "SELECT count(*) FROM fila_mensagens") == 3)
        #expect(try await int(client, "SELECT count(*) FROM fila_mensagens_arquivo WHERE status = 'enviada' AND arquivada_em IS NOT NULL") == 6)
        #expect(try await run("arquivar-fila").result == ["arquivadas": 0])
        // Every column of the queue is archived, by name.
        let queueColumns = try await client.query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'fila_mensagens'",
            logger: logger
        ).collect().map { try $0.decode(String.self) }
        let archiveColumns = try await client.query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'fila_mensagens_arquivo'",
            logger: logger
        ).collect().map { try $0.decode(String.self) }
        let listed = BuiltinJobs.archivedColumns.split(whereSeparator: { $0 == "," || $0 == "\n" })
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        #expect(Set(listed) == Set(queueColumns))
        #expect(Set(archiveColumns) == Set(queueColumns).union(["arquivada_em"]))
    }
}
