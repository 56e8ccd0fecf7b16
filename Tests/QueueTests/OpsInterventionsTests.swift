import Database
import FilaTestSupport
import Foundation
import PostgresNIO
@testable import Queue
import Testing

/// The audited interventions of the `ops` schema (migration 0014) as an operator calls them from
/// psql (a login in fila_operator, which writes no table itself), against a
/// real Postgres: what each changes, what it refuses (SQLSTATE 22023, nothing written), and its
/// `ops_audit` row with the login that made it.
@Suite("ops interventions", .migratedDatabase)
struct OpsInterventionsTests {
    /// Runs `body` as an operator would: `client` is logged in as a member of fila_operator,
    /// which reads and calls the ops functions but writes no table; `queue` is the owner's, for
    /// fixtures.
    func asOperator(_ body: (PostgresClient, MessageQueue) async throws -> Void) async throws {
        let queue = MessageQueue(client: try TestDatabase.current.client)
        try await TestDatabase.withLogin(in: .operator) { client, _ in try await body(client, queue) }
    }

    func text(_ client: PostgresClient, _ sql: String) async throws -> String? {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first?.decode(String?.self)
    }

    func int(_ client: PostgresClient, _ sql: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(Int.self)
    }

    /// Each message's status, in the order of `ids`.
    func statuses(_ queue: MessageQueue, _ ids: [UUID]) async throws -> [String] {
        var statuses: [String] = []
        for id in ids { statuses.append(try await queue.row(id).status) }
        return statuses
    }

    /// The audit's rows, oldest first: "acao linhas motivo", and whether each names the login.
    func audit(_ client: PostgresClient) async throws -> [String] {
        try await client.query(
            "SELECT acao || ' ' || linhas || ' ' || coalesce(motivo, '-') || CASE WHEN feito_por = session_user THEN '' ELSE ' (who?)' END FROM ops.audit ORDER BY id",
            logger: logger
        ).collect().map { try $0.decode(String.self) }
    }

    @Test func singleMessagesAreRequeuedCancelledAndMadeDue() async throws {
        try await asOperator { client, queue in
            let ids = try await queue.enqueue((1...4).map { message($0) }, logger: logger).map(\.id)
            let (failed, sent, pending, later) = (ids[0], ids[1], ids[2], ids[3])
            try await queue.execute("UPDATE fila_mensagens SET status = 'erro', tentativas = 3, max_tentativas = 3, outcome = 'FAILED_PROVIDER' WHERE id = '\(failed)'")
            try await queue.execute("UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', enviada_em = now() WHERE id = '\(sent)'")
            try await queue.execute("UPDATE fila_mensagens SET agendar_para = now() + interval '3 hours' WHERE id = '\(later)'")

            // requeue: one more attempt, the count kept.
            #expect(try await text(client, "SELECT format('%s %s/%s', status, tentativas, max_tentativas) FROM ops.requeue('\(failed)', 'provider back')") == "pendente 3/4")
            await expectRefused(client, "SELECT ops.requeue('\(sent)', 'again')", saying: "would send it twice")
            await expectRefused(client, "SELECT ops.requeue('\(pending)', 'again')", saying: "already")
            await expectRefused(client, "SELECT ops.requeue('\(UUID())', 'again')", saying: "no message with id")
            await expectRefused(client, "SELECT ops.requeue('\(failed)', '  ')", saying: "a motivo is required")

            // send_now: only the schedule moves.
            #expect(try await text(client, "SELECT (agendar_para <= now())::text FROM ops.send_now('\(later)', 'doctor asked')") == "true")
            await expectRefused(client, "SELECT ops.send_now('\(sent)', 'x')", saying: "only a pending message")

            // cancel: pending only.
            #expect(try await text(client, "SELECT status || ' ' || outcome || ' ' || outcome_reason_code FROM ops.cancel('\(pending)', 'wrong text')")
                == "cancelada CANCELLED_MANUAL manual:\(try await text(client, "SELECT session_user::text")!)")
            try await queue.execute("UPDATE fila_mensagens SET status = 'processando', worker_id = 'w1', processando_desde = now() WHERE id = '\(later)'")
            await expectRefused(client, "SELECT ops.cancel('\(later)', 'too late')", saying: "being sent now (by w1)")
            await expectRefused(client, "SELECT ops.cancel('\(sent)', 'x')", saying: "only a pending message")

            // The sent row never changed; every refusal left no audit row.
            #expect(try await text(client, "SELECT status || ' ' || outcome FROM fila_mensagens WHERE id = '\(sent)'") == "enviada SENT")
            #expect(try await audit(client) == ["requeue 1 provider back", "send_now 1 doctor asked", "cancel 1 wrong text"])
        }
    }

    @Test func failuresAreRequeuedByOutcomeNeverSentOrUnfitOnes() async throws {
        try await asOperator { client, queue in
            let ids = try await queue.enqueue((1...5).map { message($0) }, logger: logger).map(\.id)
            try await queue.execute("UPDATE fila_mensagens SET status = 'erro', tentativas = 3, max_tentativas = 3, outcome = 'FAILED_PROVIDER', outcome_at = now() - interval '1 hour' WHERE id IN ('\(ids[0])', '\(ids[1])')")
            try await queue.execute("UPDATE fila_mensagens SET status = 'erro', outcome = 'FAILED_PROVIDER', outcome_at = now() - interval '2 days' WHERE id = '\(ids[2])'")
            try await queue.execute("UPDATE fila_mensagens SET status = 'erro', outcome = 'FAILED_VALIDATION', outcome_at = now() WHERE id = '\(ids[3])'")
            try await queue.execute("UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', outcome_at = now(), enviada_em = now() WHERE id = '\(ids[4])'")

            #expect(try await int(client, "SELECT ops.requeue_failed(now() - interval '6 hours', 'FAILED_PROVIDER', 'Evolution was down')") == 2)
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE status = 'pendente' AND max_tentativas = 4") == 2)
            #expect(try await int(client, "SELECT ops.requeue_failed(now() - interval '6 hours', 'FAILED_TIMEOUT', 'none of these')") == 0)
            await expectRefused(client, "SELECT ops.requeue_failed(now() - interval '6 hours', 'FAILED_VALIDATION', 'x')", saying: "not retryable")
            await expectRefused(client, "SELECT ops.requeue_failed(now() - interval '6 hours', 'FAILED_GUARDRAIL', 'x')", saying: "not retryable")
            await expectRefused(client, "SELECT ops.requeue_failed(now() - interval '6 hours', 'SENT', 'x')", saying: "outcome must be one that ends in erro")
            await expectRefused(client, "SELECT ops.requeue_failed(now() + interval '1 hour', 'FAILED_PROVIDER', 'x')", saying: "since must be a time in the past")
            await expectRefused(client, "SELECT ops.requeue_failed(now() - interval '1 hour', 'FAILED_PROVIDER', NULL)", saying: "a motivo is required")
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE status = 'erro'") == 2)
            #expect(try await audit(client) == ["requeue_failed 2 Evolution was down", "requeue_failed 0 none of these"])
            #expect(try await text(client, "SELECT argumentos->>'outcome' FROM ops_audit ORDER BY id LIMIT 1") == "FAILED_PROVIDER")
        }
    }

    @Test func aCampaignsPendingMessagesAreCancelledAndAWorkersClaimsReturned() async throws {
        try await asOperator { client, queue in
            let campaign = (1...4).map {
                NewMessage(clienteID: "medico-\($0)", telefone: String(format: "55119%08d", $0), conteudo: "campanha \($0)", tipo: .campanha, correlationID: "campanha-7")
            }
            let ids = try await queue.enqueue(campaign + [message(9)], logger: logger).map(\.id)
            try await queue.registerWorker("w1")
            try await queue.execute("UPDATE fila_mensagens SET status = 'processando', worker_id = 'w1', processando_desde = now() WHERE id IN ('\(ids[0])', '\(ids[4])')")
            try await queue.execute("UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', enviada_em = now() WHERE id = '\(ids[1])'")

            #expect(try await int(client, "SELECT ops.cancel_campaign('campanha-7', 'wrong template')") == 2)
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE correlation_id = 'campanha-7' AND status = 'cancelada'") == 2)
            #expect(try await text(client, "SELECT status FROM fila_mensagens WHERE id = '\(ids[0])'") == "processando")
            await expectRefused(client, "SELECT ops.cancel_campaign(' ', 'x')", saying: "a correlation_id is required")

            // The worker's claims come back without an attempt used; its later write is fenced.
            #expect(try await int(client, "SELECT ops.return_stuck('w1', 'hung since 09:10')") == 2)
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE status = 'pendente' AND outcome = 'FAILED_WORKER_LOST' AND outcome_reason_code = 'manual:w1' AND tentativas = 0 AND worker_id IS NULL") == 2)
            #expect(try await int(client, "SELECT ops.return_stuck('w1', 'again')") == 0)
            await expectRefused(client, "SELECT ops.return_stuck(NULL, 'x')", saying: "a worker_id is required")
            #expect(try await audit(client) == ["cancel_campaign 2 wrong template", "return_stuck 2 hung since 09:10", "return_stuck 0 again"])
        }
    }

    @Test func jobsAreRunPausedAndResumed() async throws {
        try await asOperator { client, queue in
            try await queue.execute("""
                INSERT INTO job_definitions (name, schedule, time_zone, sla_seconds, late_after_seconds, timeout_seconds)
                VALUES ('arquivar-fila', 'cron 0 4 * * *', 'America/Sao_Paulo', 300, 172800, 900)
                """)
            #expect(try await text(client, "SELECT status || ' ' || triggered_by FROM ops.run_job('arquivar-fila')") == "pending psql")
            await expectRefused(client, "SELECT ops.run_job('no-such-job')", saying: "no job named no-such-job")
            #expect(try await text(client, "SELECT enabled::text FROM ops.pause_job('arquivar-fila', 'disk full tonight')") == "false")
            await expectRefused(client, "SELECT ops.pause_job('arquivar-fila', 'again')", saying: "paused already")
            await expectRefused(client, "SELECT ops.resume_job('arquivar-fila', '')", saying: "a motivo is required")
            #expect(try await text(client, "SELECT enabled::text FROM ops.resume_job('arquivar-fila', 'disk cleaned')") == "true")
            #expect(try await audit(client) == ["run_job 1 -", "pause_job 1 disk full tonight", "resume_job 1 disk cleaned"])
            #expect(try await int(client, "SELECT count(*) FROM job_executions WHERE job_name = 'arquivar-fila' AND status = 'pending'") == 1)
        }
    }

    @Test func sendingIsPausedForAWhileOrUntilResumed() async throws {
        try await asOperator { client, _ in
            #expect(try await int(client, "SELECT count(*) FROM ops.pausa_envios") == 0)
            await expectRefused(client, "SELECT ops.resume_sending('nothing to resume')", saying: "sending is not paused")
            await expectRefused(client, "SELECT ops.pause_sending('x', interval '-5 minutes')", saying: "duracao must be more than 0")
            await expectRefused(client, "SELECT ops.pause_sending('x', interval '31 days')", saying: "duracao must be more than 0")
            await expectRefused(client, "SELECT ops.pause_sending(NULL)", saying: "a motivo is required")

            let pause = try await text(client, "SELECT format('%s|%s|%s', p->>'motivo', p->>'por' = session_user, p->'ate') FROM ops.pause_sending('wrong template') p")
            #expect(pause == "wrong template|t|null")
            #expect(try await text(client, "SELECT motivo || ' ' || (ate IS NULL) FROM ops.pausa_envios") == "wrong template true")
            // A pause for a while ends by itself.
            _ = try await client.query("SELECT ops.pause_sending('maintenance', interval '10 minutes')", logger: logger).collect()
            #expect(try await text(client, "SELECT (ate BETWEEN now() + interval '9 minutes' AND now() + interval '11 minutes')::text FROM ops.pausa_envios") == "true")
            _ = try await TestDatabase.current.client.query(
                "UPDATE app_settings SET value = jsonb_set(value, '{ate}', to_jsonb(now() - interval '1 second')) WHERE key = 'sending.pause'",
                logger: logger
            ).collect()
            #expect(try await int(client, "SELECT count(*) FROM ops.pausa_envios") == 0)
            #expect(try await text(client, "SELECT fila_sending_pause()::text") == nil)
            // An end edited by hand into something that is not a time counts as no end: the pause
            // holds, reads, and still ends with ops.resume_sending.
            _ = try await client.query("SELECT ops.pause_sending('edited by hand', interval '5 minutes')", logger: logger).collect()
            _ = try await TestDatabase.current.client.query(#"UPDATE app_settings SET value = jsonb_set(value, '{ate}', '"soon"') WHERE key = 'sending.pause'"#, logger: logger).collect()
            #expect(try await text(client, "SELECT motivo || ' ' || (ate IS NULL) FROM ops.pausa_envios") == "edited by hand true")
            #expect(try await SendingPause.read(client: client, logger: logger)?.motivo == "edited by hand")
            _ = try await client.query("SELECT ops.resume_sending('cleared')", logger: logger).collect()
            // Paused again, then resumed by hand.
            _ = try await client.query("SELECT ops.pause_sending('again')", logger: logger).collect()
            #expect(try await text(client, "SELECT p->>'motivo' FROM ops.resume_sending('fixed') p") == "again")
            #expect(try await int(client, "SELECT count(*) FROM app_settings WHERE key = 'sending.pause'") == 0)
            #expect(try await audit(client) == [
                "pause_sending 1 wrong template", "pause_sending 1 maintenance", "pause_sending 1 edited by hand", "resume_sending 1 cleared",
                "pause_sending 1 again", "resume_sending 1 fixed",
            ])
        }
    }

    /// What a worker reads: the pause with its expiry, or none.
    @Test func aWorkerReadsThePauseInForce() async throws {
        try await asOperator { client, _ in
            #expect(try await SendingPause.read(client: client, logger: logger) == nil)
            _ = try await client.query("SELECT ops.pause_sending('campaign check', interval '1 hour')", logger: logger).collect()
            let pause = try #require(try await SendingPause.read(client: client, logger: logger))
            #expect(pause.motivo == "campaign check")
            let ate = try #require(pause.ate)
            #expect(abs(ate.timeIntervalSinceNow - 3600) < 120)
            // Its time left is the database's reckoning, counted down by this process's monotonic clock.
            let remaining = try #require(pause.remaining)
            #expect(remaining > .seconds(3500) && remaining <= .seconds(3600))
            let local = SendingPause()
            _ = local.set(pause)
            #expect(local.active?.motivo == "campaign check")
            _ = local.set(pause, readAt: .now - .seconds(3601))
            #expect(local.active == nil)
        }
    }

    @Test func settingsAreCheckedAgainstTheCatalogAndAudited() async throws {
        try await asOperator { (client, _) async throws in
            #expect(try await text(client, "SELECT value::text FROM ops.set_setting('guardrail.contact_cap_7d.limit', '3', 'agreed on 3')") == "3")
            #expect(try await text(client, "SELECT value::text FROM ops.set_setting('alert.fila_acumulada.cooldown_seconds', '900', 'quieter')") == "900")
            #expect(try await text(client, "SELECT value::text FROM ops.set_setting('rate_limit.weights', '{\"campanha\": 2, \"resposta\": 0}', 'campaigns weigh 2')") == #"{"campanha": 2, "resposta": 0}"#)
            #expect(try await text(client, "SELECT value::text FROM ops.set_setting('rate_limit.time_zone', '\"America/Manaus\"', 'the team moved')") == #""America/Manaus""#)
            #expect(try await text(client, "SELECT (updated_by = session_user)::text FROM app_settings WHERE key = 'guardrail.contact_cap_7d.limit'") == "true")
            // The value in force beside the default, and a pattern's key listed once set.
            #expect(try await text(client, "SELECT format('%s %s %s', tipo, padrao, valor) FROM ops.settings WHERE chave = 'guardrail.contact_cap_7d.limit'") == "integer 2 3")
            #expect(try await text(client, "SELECT valor::text FROM ops.settings WHERE chave = 'alert.fila_acumulada.cooldown_seconds'") == "900")

            for (sql, words) in [
                ("SELECT ops.set_setting('guardrail.contact_cap_7d.limit', '1001', 'x')", "must be between 0 and 1000"),
                ("SELECT ops.set_setting('guardrail.contact_cap_7d.limit', '2.5', 'x')", "must be a whole number"),
                ("SELECT ops.set_setting('guardrail.contact_cap_7d.limit', '\"3\"', 'x')", "must be a whole number"),
                ("SELECT ops.set_setting('guardrail.contact_cap_7d.enabled', '1', 'x')", "must be true or false"),
                ("SELECT ops.set_setting('rate_limit.time_zone', '\"Mars/Olympus\"', 'x')", "must be a time zone name"),
                ("SELECT ops.set_setting('rate_limit.weights', '{\"campanha\": -1}', 'x')", "must be a JSON object of whole numbers"),
                ("SELECT ops.set_setting('no.such.setting', '1', 'x')", "unknown setting no.such.setting"),
                ("SELECT ops.set_setting('sending.pause', '{}', 'x')", "set by ops.pause_sending"),
                ("SELECT ops.set_setting('retention.ops_audit_days', '30', ' ')", "a motivo is required"),
            ] {
                await expectRefused(client, sql, saying: words)
            }
            #expect(try await text(client, "SELECT value::text FROM app_settings WHERE key = 'guardrail.contact_cap_7d.limit'") == "3")

            // NULL removes the row: the default applies again.
            #expect(try await text(client, "SELECT key FROM ops.set_setting('guardrail.contact_cap_7d.limit', NULL, 'back to the default')") == "guardrail.contact_cap_7d.limit")
            #expect(try await int(client, "SELECT count(*) FROM app_settings WHERE key = 'guardrail.contact_cap_7d.limit'") == 0)
            #expect(try await text(client, "SELECT format('%s>%s', argumentos->>'de', coalesce(argumentos->>'para', 'NULL')) FROM ops_audit WHERE acao = 'set_setting' ORDER BY id DESC LIMIT 1") == "3>NULL")
            #expect(try await int(client, "SELECT count(*) FROM ops_audit WHERE acao = 'set_setting'") == 5)
        }
    }

    // Migration 0020 --------------------------------------------------------------------------

    @Test func pendingMessagesAreCancelledByEveryFilterGivenAndACampaignMadeDue() async throws {
        try await asOperator { client, queue in
            let later = Date().addingTimeInterval(3 * 3600)
            let campaign = (1...4).map {
                NewMessage(clienteID: "medico-\($0)", telefone: String(format: "55119%08d", $0), conteudo: "campanha \($0)", tipo: .campanha,
                           agendarPara: later, correlationID: "campanha-8", metadata: #"{"campanha_id": "\#($0 <= 2 ? "7" : "8")"}"#)
            }
            let ids = try await queue.enqueue(campaign + [message(9)], logger: logger).map(\.id)
            try await queue.execute("UPDATE fila_mensagens SET status = 'processando', worker_id = 'w1', processando_desde = now() WHERE id = '\(ids[0])'")

            // Every filter given must match: the campaign's rows with campanha_id 7, one of them in flight.
            #expect(try await int(client, #"SELECT ops.cancel_pending('wrong template', metadata => '{"campanha_id": "7"}', tipo => 'campanha')"#) == 1)
            #expect(try await int(client, "SELECT ops.cancel_pending('nothing is a followup', tipo => 'followup')") == 0)
            #expect(try await int(client, "SELECT ops.cancel_pending('none that old', created_until => now() - interval '1 day')") == 0)
            await expectRefused(client, "SELECT ops.cancel_pending('no filter')", saying: "say which messages")
            await expectRefused(client, "SELECT ops.cancel_pending('x', tipo => 'promo')", saying: "tipo must be")
            await expectRefused(client, "SELECT ops.cancel_pending('x', metadata => '[1]')", saying: "metadata must be a non-empty JSON object")
            await expectRefused(client, "SELECT ops.cancel_pending('x', metadata => '{}')", saying: "would match every row")
            await expectRefused(client, "SELECT ops.cancel_pending('x', correlation_id => ' ')", saying: "must not be blank")
            await expectRefused(client, "SELECT ops.cancel_pending('x', created_from => now(), created_until => now() - interval '1 hour')", saying: "created_from must come before")
            await expectRefused(client, "SELECT ops.cancel_pending(NULL, tipo => 'campanha')", saying: "a motivo is required")
            #expect(try await statuses(queue, ids) == ["processando", "cancelada", "pendente", "pendente", "pendente"])

            // The rest of the campaign, due now; the message outside it keeps its schedule.
            #expect(try await int(client, "SELECT ops.send_campaign_now('campanha-8', 'clinic asked for today')") == 2)
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE status = 'pendente' AND agendar_para <= now()") == 3)
            #expect(try await int(client, "SELECT ops.send_campaign_now('campanha-8', 'again')") == 0)
            await expectRefused(client, "SELECT ops.send_campaign_now('', 'x')", saying: "a correlation_id is required")
            // One message ahead of the line; an ended one has no place in it.
            #expect(try await text(client, "SELECT prioridade::text FROM ops.set_priority('\(ids[4])', 100, 'the doctor is waiting')") == "100")
            await expectRefused(client, "SELECT ops.set_priority('\(ids[4])', 101, 'x')", saying: "prioridade must be between -100 and 100")
            await expectRefused(client, "SELECT ops.set_priority('\(ids[1])', 5, 'x')", saying: "only a pending message")
            #expect(try await audit(client) == [
                "cancel_pending 1 wrong template", "cancel_pending 0 nothing is a followup", "cancel_pending 0 none that old",
                "send_campaign_now 2 clinic asked for today", "send_campaign_now 0 again", "set_priority 1 the doctor is waiting",
            ])
            #expect(try await text(client, "SELECT argumentos::text FROM ops_audit ORDER BY id LIMIT 1") == #"{"tipo": "campanha", "metadata": {"campanha_id": "7"}}"#)
        }
    }

    @Test func aDoctorsRefusedMessagesGoAgainOnceUnblockedAndOneGoesPastTheGuardrails() async throws {
        try await asOperator { client, queue in
            let ids = try await queue.enqueue((1...3).map { _ in message(42, tipo: .campanha) }, logger: logger).map(\.id)
            try await queue.execute("""
                UPDATE fila_mensagens SET status = 'erro', tentativas = 0, max_tentativas = 3, outcome = 'FAILED_GUARDRAIL',
                       outcome_reason_code = 'guardrail:blocked', outcome_at = now() - interval '1 hour'
                 WHERE id IN ('\(ids[0])', '\(ids[1])')
                """)
            try await queue.execute("UPDATE fila_mensagens SET status = 'erro', outcome = 'FAILED_GUARDRAIL', outcome_reason_code = 'guardrail:contact_cap_7d', outcome_at = now() WHERE id = '\(ids[2])'")
            _ = try await client.query("SELECT ops.block_medico('medico-42', 'asked not to be contacted')", logger: logger).collect()

            await expectRefused(client, "SELECT ops.requeue_unblocked('medico-42', now() - interval '1 day', 'x')", saying: "still blocked")
            _ = try await client.query("SELECT ops.unblock_medico('medico-42', 'confirmed by phone')", logger: logger).collect()
            #expect(try await int(client, "SELECT ops.requeue_unblocked('medico-42', now() - interval '1 day', 'unblocked')") == 2)
            #expect(try await statuses(queue, ids) == ["pendente", "pendente", "erro"])
            #expect(try await int(client, "SELECT count(*) FROM fila_mensagens WHERE max_tentativas = 3") == 3)
            await expectRefused(client, "SELECT ops.requeue_unblocked('medico-42', now() + interval '1 day', 'x')", saying: "since must be a time in the past")

            // The cap's refusal goes out only past the guardrails: not for a plain operator.
            do {
                _ = try await client.query("SELECT ops.bypass_guardrails(\(ids[2]), 'approved')", logger: logger).collect()
                Issue.record("an operator outside fila_guardrail_bypass set a bypass")
            } catch let error as PSQLError {
                #expect(error.serverInfo?[.sqlState] == "42501")
            }
            try await TestDatabase.withLogin(in: .operator, alsoIn: ["fila_guardrail_bypass"]) { (coordinator, login) async throws in
                #expect(try await text(coordinator, "SELECT format('%s %s %s', status, guardrail_bypass_por, agendar_para <= now()) FROM ops.bypass_guardrails('\(ids[2])', 'approved by the coordination')")
                    == "pendente \(login) t")
                await expectRefused(coordinator, "SELECT ops.bypass_guardrails('\(UUID())', 'x')", saying: "no message with id")
            }
            #expect(try await int(client, "SELECT count(*) FROM ops_audit WHERE acao = 'bypass_guardrails'") == 1)
        }
    }

    @Test func aDoctorsBudgetIsGivenBackForToday() async throws {
        try await asOperator { client, queue in
            try await queue.execute("""
                INSERT INTO rate_limit_counters (cliente_id, janela, usado, versao) VALUES
                    ('medico-42', (now() AT TIME ZONE 'America/Sao_Paulo')::date, 3, 5),
                    ('medico-42', (now() AT TIME ZONE 'America/Sao_Paulo')::date - 1, 4, 1)
                """)
            #expect(try await int(client, "SELECT ops.reset_rate_limit('medico-42', 'sent by mistake')") == 3)
            #expect(try await text(client, "SELECT string_agg(usado || '/' || versao, ',' ORDER BY janela) FROM rate_limit_counters") == "4/1,0/6")
            #expect(try await int(client, "SELECT ops.reset_rate_limit('medico-7', 'never counted')") == 0)
            await expectRefused(client, "SELECT ops.reset_rate_limit(' ', 'x')", saying: "a cliente_id is required")
            #expect(try await audit(client) == ["reset_rate_limit 1 sent by mistake", "reset_rate_limit 0 never counted"])
            // With rate_limit.time_zone set, today is the day there.
            _ = try await client.query(#"SELECT ops.set_setting('rate_limit.time_zone', '"Pacific/Kiritimati"', 'test')"#, logger: logger).collect()
            try await queue.execute("""
                INSERT INTO rate_limit_counters (cliente_id, janela, usado) VALUES
                    ('medico-43', (now() AT TIME ZONE 'Pacific/Kiritimati')::date, 2),
                    ('medico-43', (now() AT TIME ZONE 'Pacific/Kiritimati')::date - 1, 5)
                """)
            #expect(try await int(client, "SELECT ops.reset_rate_limit('medico-43', 'by the zone')") == 2)
        }
    }

    @Test func alertNotificationsAreMarkedFalseAndSentAgain() async throws {
        try await asOperator { client, queue in
            try await queue.execute("""
                INSERT INTO alert_state (rule, key) VALUES ('fila_acumulada', 'fila'), ('job_atrasado', 'arquivar-fila'), ('circuito_aberto', 'evolution')
                """)
            try await queue.execute("""
                INSERT INTO alert_events (rule, key, kind, title, text, status, sent_at, created_at) VALUES
                    ('fila_acumulada', 'fila', 'firing', 't', 'x', 'sent', now(), now()),
                    ('job_atrasado', 'arquivar-fila', 'firing', 't', 'x', 'failed', NULL, now() - interval '2 hours'),
                    ('job_atrasado', 'arquivar-fila', 'resolved', 't', 'x', 'disabled', NULL, now() - interval '1 hour'),
                    ('circuito_aberto', 'evolution', 'firing', 't', 'x', 'failed', NULL, now() - interval '3 days')
                """)
            let first = try await int(client, "SELECT min(id) FROM alert_events")
            #expect(try await text(client, "SELECT false_positive::text FROM ops.mark_false_alert(\(first), 'planned campaign')") == "true")
            await expectRefused(client, "SELECT ops.mark_false_alert(\(first + 100), 'x')", saying: "no alert notification with id")
            // A resolution is not what the false-alert rate counts: the one that fired is named.
            await expectRefused(
                client, "SELECT ops.mark_false_alert(\(first + 2), 'x')",
                saying: "says job_atrasado arquivar-fila was resolved; mark the notification that fired (id \(first + 1))"
            )
            // Marked again: nothing changes, and the audit keeps the first mark only.
            #expect(try await text(client, "SELECT false_positive::text FROM ops.mark_false_alert(\(first), 'again')") == "true")
            #expect(try await int(client, "SELECT count(*) FROM alert_events WHERE false_positive") == 1)
            #expect(try await int(client, "SELECT ops.retry_failed_alerts(now() - interval '1 day', 'new webhook')") == 2)
            #expect(try await text(client, "SELECT string_agg(status, ',' ORDER BY id) FROM alert_events") == "sent,pending,pending,failed")
            await expectRefused(client, "SELECT ops.retry_failed_alerts(NULL, 'x')", saying: "since must be a time in the past")
            #expect(try await audit(client) == ["mark_false_alert 1 planned campaign", "retry_failed_alerts 2 new webhook"])
        }
    }

    @Test func aChipsLimitsAndTheDefaultChipChange() async throws {
        try await asOperator { client, queue in
            // Adding a chip is the owner's (it names a secret); an operator manages it after.
            await expectDenied(client, "SELECT ops.add_chip('x', 'X', 'evolution', 'x', 'DATABASE_URL', base_url => 'http://attacker.example', motivo => 'x')")
            for chip in ["clinica-1", "clinica-2"] {
                _ = try await queue.client.query(PostgresQuery(unsafeSQL: """
                    SELECT ops.add_chip('\(chip)', 'C', 'evolution', '\(chip)', 'KEY', base_url => 'http://127.0.0.1:1',
                                        is_default => \(chip == "clinica-1"), motivo => 'new')
                    """), logger: logger).collect()
            }
            #expect(try await text(client, "SELECT format('%s %s', limite_diario, min_intervalo_segundos) FROM ops.set_chip_limits('clinica-2', 300, NULL, 'warmed up')") == "300 30")
            #expect(try await text(client, "SELECT format('%s %s', limite_diario, min_intervalo_segundos) FROM ops.set_chip_limits('clinica-2', NULL, 20, 'faster')") == "300 20")
            await expectRefused(client, "SELECT ops.set_chip_limits('clinica-2', 0, NULL, 'x')", saying: "limite_diario must be 1 to 100000")
            await expectRefused(client, "SELECT ops.set_chip_limits('clinica-2', NULL, NULL, 'x')", saying: "give limite_diario")
            await expectRefused(client, "SELECT ops.set_chip_limits('nope', 5, NULL, 'x')", saying: "no chip nope")
            #expect(try await text(client, "SELECT argumentos->'de'->>'limite_diario' || '>' || (argumentos->'para'->>'limite_diario') FROM ops_audit WHERE acao = 'set_chip_limits' ORDER BY id LIMIT 1") == "200>300")

            #expect(try await text(client, "SELECT is_default::text FROM ops.set_default_chip('clinica-2', 'clinica-1 retiring')") == "true")
            #expect(try await text(client, "SELECT string_agg(id, ',') FROM chips WHERE is_default") == "clinica-2")
            #expect(try await text(client, "SELECT string_agg(chip_id || ' ' || de || '>' || para || ' ' || motivo, ', ' ORDER BY id) FROM chip_events WHERE acao = 'default'")
                == "clinica-1 true>false clinica-1 retiring, clinica-2 false>true clinica-1 retiring")
            _ = try await client.query("SELECT ops.retire_chip('clinica-1', 'banned')", logger: logger).collect()
            await expectRefused(client, "SELECT ops.set_default_chip('clinica-1', 'x')", saying: "retired")
            // The chips added by the owner are its rows, not this operator's.
            #expect(try await audit(client) == [
                "add_chip 1 new (who?)", "add_chip 1 new (who?)", "set_chip_limits 1 warmed up", "set_chip_limits 1 faster",
                "set_default_chip 1 clinica-1 retiring", "set_chip_status 1 banned",
            ])
        }
    }
}
