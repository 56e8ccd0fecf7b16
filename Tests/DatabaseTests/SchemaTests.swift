import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

@Suite("The core schema refuses invalid rows", .migratedDatabase)
struct SchemaTests {
    let logger = TestDatabase.logger

    /// Runs `sql` and returns the SQLSTATE it failed with, or nil when it succeeded.
    private func sqlState(of sql: PostgresQuery, in url: DatabaseURL) async throws -> String? {
        try await url.withConnection(logger: logger) { connection in
            do {
                try await connection.query(sql, logger: logger)
                return nil
            } catch let error as PSQLError {
                return error.serverInfo?[.sqlState]
            }
        }
    }

    @Test func aMessageGetsItsDefaults() async throws {
        let url = try TestDatabase.current.url
        let row = try await url.withConnection(logger: logger) { connection in
            try await connection.query(
                """
                INSERT INTO fila_mensagens (cliente_id, telefone, conteudo)
                VALUES ('medico-1', '5511999990000', 'Olá, doutor')
                RETURNING status, tipo, tentativas, max_tentativas, prioridade, metadata::text,
                          agendar_para <= now(), created_at = now()
                """,
                logger: logger
            ).collect().first!.decode((String, String, Int32, Int32, Int16, String, Bool, Bool).self)
        }
        #expect(row.0 == "pendente")
        #expect(row.1 == "resposta")
        #expect(row.2 == 0)
        #expect(row.3 == 3)
        #expect(row.4 == 0)
        #expect(row.5 == "{}")
        #expect(row.6 && row.7)
    }

    @Test(arguments: [
        // Each statement breaks one CHECK constraint: 23514 check_violation.
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status) VALUES ('c', '5511999990000', 'x', 'enviando')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo) VALUES ('c', '5511999990000', 'x', 'promo')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, outcome) VALUES ('c', '5511999990000', 'x', 'FAILED_SOMEHOW')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo) VALUES ('c', '+55 11 99999-0000', 'x')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo) VALUES ('c', '5511999990000', '   ')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status) VALUES ('c', '5511999990000', 'x', 'processando')",
        "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status) VALUES ('c', '5511999990000', 'x', 'enviada')",
        "INSERT INTO worker_heartbeats (id, kind, host, pid, version, status) VALUES ('w1', 'worker', 'h', 1, '0', 'sleeping')",
        "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w1', 'robot', 'h', 1, '0')",
        "INSERT INTO job_executions (job_name, status) VALUES ('limpar-fila-antiga', 'done')",
        "INSERT INTO job_executions (job_name, triggered_by) VALUES ('limpar-fila-antiga', 'cron')",
        "INSERT INTO job_executions (job_name, status) VALUES ('limpar-fila-antiga', 'success')",
        "INSERT INTO app_settings (key, value) VALUES ('Has Spaces', '1')",
    ])
    func refusesAnInvalidValue(sql: String) async throws {
        let url = try TestDatabase.current.url
        #expect(try await sqlState(of: PostgresQuery(unsafeSQL: sql), in: url) == "23514")
    }

    @Test func allowsEveryDocumentedStatusAndOutcome() async throws {
        let url = try TestDatabase.current.url
        let outcomes = [
            "SENT", "FAILED_PROVIDER", "FAILED_TIMEOUT", "FAILED_VALIDATION", "FAILED_RATE_LIMIT",
            "FAILED_GUARDRAIL", "FAILED_CIRCUIT_OPEN", "FAILED_NO_CHIP", "FAILED_EXPIRED", "FAILED_STUCK",
            "FAILED_WORKER_LOST", "CANCELLED_MANUAL",
        ]
        for outcome in outcomes {
            let sql: PostgresQuery = "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at) VALUES ('c', '5511999990000', 'x', 'erro', \(outcome), now())"
            #expect(try await sqlState(of: sql, in: url) == nil, "\(outcome)")
        }
        for status in ["pendente", "cancelada"] {
            let sql: PostgresQuery = "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status) VALUES ('c', '5511999990000', 'x', \(status))"
            #expect(try await sqlState(of: sql, in: url) == nil, "\(status)")
        }
    }

    @Test func oneSchedulerRowPerJobSlot() async throws {
        let url = try TestDatabase.current.url
        let slot: PostgresQuery = """
            INSERT INTO job_executions (job_name, scheduled_for, triggered_by)
            VALUES ('verificar-heartbeats', '2026-01-23 10:00:00+00', 'scheduler')
            """
        #expect(try await sqlState(of: slot, in: url) == nil)
        #expect(try await sqlState(of: slot, in: url) == "23505")
        // A manual run at the same instant does not take the slot.
        let manual: PostgresQuery = """
            INSERT INTO job_executions (job_name, scheduled_for, triggered_by)
            VALUES ('verificar-heartbeats', '2026-01-23 10:00:00+00', 'http')
            """
        #expect(try await sqlState(of: manual, in: url) == nil)
    }

    @Test func anIdempotencyKeyIsUnique() async throws {
        let url = try TestDatabase.current.url
        let insert: PostgresQuery = "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, idempotency_key) VALUES ('c', '5511999990000', 'x', 'campanha-42:medico-1')"
        #expect(try await sqlState(of: insert, in: url) == nil)
        #expect(try await sqlState(of: insert, in: url) == "23505")
    }

    @Test func settingsRecordWhoChangedThemAndWhen() async throws {
        let url = try TestDatabase.current.url
        let row = try await url.withConnection(logger: logger) { connection in
            try await connection.query("INSERT INTO app_settings (key, value, updated_at, updated_by) VALUES ('fila.alerta_pendentes', '50', now() - interval '1 day', 'seed')", logger: logger)
            return try await connection.query(
                "UPDATE app_settings SET value = '80' WHERE key = 'fila.alerta_pendentes' RETURNING updated_at > now() - interval '1 minute', updated_by = current_user",
                logger: logger
            ).collect().first!.decode((Bool, Bool).self)
        }
        #expect(row.0 && row.1)
    }
}

@Suite("ops/migrate-with-psql and fila migrate agree", .emptyDatabase, .timeLimit(.minutes(2)))
struct PsqlMigrationPathTests {
    let logger = TestDatabase.logger

    @Test func filesAppliedWithPsqlCountAsApplied() async throws {
        let url = try TestDatabase.current.url
        let script = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ops/migrate-with-psql")
        let process = Process()
        process.executableURL = script
        process.arguments = [url.connectionString]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")

        let migrator = try Migrator()
        let statuses = try await url.withConnection(logger: logger) { try await migrator.status(on: $0, logger: logger) }
        #expect(statuses.count == Migration.bundled.count)
        for status in statuses {
            if case .applied = status.state {} else { Issue.record("\(status.identifier): \(status.state)") }
        }
        let report = try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
        #expect(report.applied.isEmpty)
    }
}
