import Database
import FilaTestSupport
import Foundation
import PostgresNIO
@testable import Queue
import Testing

/// The audited interventions of the `ops` schema (migration 0014) as psql calls them, against a
/// real Postgres: what each changes, what it refuses (SQLSTATE 22023, nothing written), and its
/// `ops_audit` row with the login that made it.
@Suite("ops interventions", .migratedDatabase)
struct OpsInterventionsTests {
    func setup() async throws -> (PostgresClient, MessageQueue) {
        let client = try TestDatabase.current.client
        return (client, MessageQueue(client: client))
    }

    func text(_ client: PostgresClient, _ sql: String) async throws -> String? {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first?.decode(String?.self)
    }

    func int(_ client: PostgresClient, _ sql: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(Int.self)
    }

    /// The audit's rows, oldest first: "acao linhas motivo", and whether each names the login.
    func audit(_ client: PostgresClient) async throws -> [String] {
        try await client.query(
            "SELECT acao || ' ' || linhas || ' ' || coalesce(motivo, '-') || CASE WHEN feito_por = session_user THEN '' ELSE ' (who?)' END FROM ops.audit ORDER BY id",
            logger: logger
        ).collect().map { try $0.decode(String.self) }
    }

    @Test func singleMessagesAreRequeuedCancelledAndMadeDue() async throws {
        let (client, queue) = try await setup()
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

    @Test func failuresAreRequeuedByOutcomeNeverSentOrUnfitOnes() async throws {
        let (client, queue) = try await setup()
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

    @Test func aCampaignsPendingMessagesAreCancelledAndAWorkersClaimsReturned() async throws {
        let (client, queue) = try await setup()
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

    @Test func jobsAreRunPausedAndResumed() async throws {
        let (client, queue) = try await setup()
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

    @Test func sendingIsPausedForAWhileOrUntilResumed() async throws {
        let (client, _) = try await setup()
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
        _ = try await client.query(
            "UPDATE app_settings SET value = jsonb_set(value, '{ate}', to_jsonb(now() - interval '1 second')) WHERE key = 'sending.pause'",
            logger: logger
        ).collect()
        #expect(try await int(client, "SELECT count(*) FROM ops.pausa_envios") == 0)
        #expect(try await text(client, "SELECT fila_sending_pause()::text") == nil)
        // An end edited by hand into something that is not a time counts as no end: the pause
        // holds, reads, and still ends with ops.resume_sending.
        _ = try await client.query("SELECT ops.pause_sending('edited by hand', interval '5 minutes')", logger: logger).collect()
        _ = try await client.query(#"UPDATE app_settings SET value = jsonb_set(value, '{ate}', '"soon"') WHERE key = 'sending.pause'"#, logger: logger).collect()
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

    /// What a worker reads: the pause with its expiry, or none.
    @Test func aWorkerReadsThePauseInForce() async throws {
        let (client, _) = try await setup()
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

    @Test func settingsAreCheckedAgainstTheCatalogAndAudited() async throws {
        let (client, _) = try await setup()
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
