import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// `ops.block_medico` / `ops.unblock_medico` as an operator types them in psql: the
/// records they leave, the history kept, and the refusals of bad input.
@Suite(.migratedDatabase) struct DoctorBlockSQLTests {
    let logger = TestDatabase.logger

    func execute(_ sql: String) async throws {
        // Collected: a function's error may come after the query's first answer.
        _ = try await TestDatabase.current.client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
    }

    func strings(_ sql: String) async throws -> [String] {
        var result: [String] = []
        for try await text in try await TestDatabase.current.client.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(String.self) {
            result.append(text)
        }
        return result
    }

    /// The SQLSTATE and message `sql` fails with.
    func failure(_ sql: String) async -> (state: String, message: String)? {
        do {
            try await execute(sql)
            return nil
        } catch let error as PSQLError {
            return (error.serverInfo?[.sqlState] ?? "", error.serverInfo?[.message] ?? "")
        } catch {
            return ("?", String(describing: error))
        }
    }

    @Test func blockAndUnblockRecordWhoWhenAndWhyAndKeepTheHistory() async throws {
        let login = try await strings("SELECT session_user::text")[0]
        try await execute("SELECT ops.block_medico('medico-42', 'pediu para não receber')")
        #expect(try await strings("SELECT cliente_id || '|' || motivo || '|' || blocked_by FROM ops.medicos_bloqueados") == ["medico-42|pediu para não receber|\(login)"])
        try await execute("SELECT ops.unblock_medico('medico-42', '  confirmou por telefone  ')")
        #expect(try await strings("SELECT cliente_id FROM ops.medicos_bloqueados").isEmpty)
        try await execute("SELECT ops.block_medico('medico-42', 'de novo')")
        let history = try await strings("""
            SELECT concat_ws('|', motivo, blocked_by, unblocked_by, unblock_motivo, (unblocked_at >= blocked_at)::text)
              FROM medico_bloqueios WHERE cliente_id = 'medico-42' ORDER BY id
            """)
        #expect(history == ["pediu para não receber|\(login)|\(login)|confirmou por telefone|true", "de novo|\(login)"])
        #expect(try await strings("SELECT bloqueios_total::text FROM ops.medicos_bloqueados") == ["2"])
    }

    @Test func badInputIsRefusedWithAClearSentence() async throws {
        let blankMotivo = await failure("SELECT ops.block_medico('medico-1', '   ')")
        #expect(blankMotivo?.state == "22023")
        #expect(blankMotivo?.message == "a motivo is required (1-1000 characters): say why medico-1 is blocked")
        #expect(await failure("SELECT ops.block_medico('medico-1', NULL)")?.state == "22023")
        #expect(await failure("SELECT ops.block_medico('', 'x')")?.state == "22023")
        #expect(await failure("SELECT ops.unblock_medico(NULL, 'x')")?.state == "22023")

        try await execute("SELECT ops.block_medico('medico-1', 'motivo')")
        let twice = await failure("SELECT ops.block_medico('medico-1', 'outro motivo')")
        #expect(twice?.state == "22023")
        #expect(twice?.message.hasPrefix("medico-1 is already blocked (since ") == true)
        let noMotivo = await failure("SELECT ops.unblock_medico('medico-1', '')")
        #expect(noMotivo?.state == "22023")
        #expect(noMotivo?.message == "a motivo is required (1-1000 characters): say why medico-1 is unblocked")
        // Nothing was changed by the refusals.
        #expect(try await strings("SELECT motivo FROM medico_bloqueios WHERE unblocked_at IS NULL") == ["motivo"])

        let unknown = await failure("SELECT ops.unblock_medico('medico-desconhecido', 'x')")
        #expect(unknown?.state == "P0002")
        #expect(unknown?.message == "medico-desconhecido is not blocked")
    }

    /// The ops functions run as their owner (an operator writes no table itself, migration
    /// 0019); the helpers they and the worker call run as the caller. All on a fixed path.
    @Test func theOpsFunctionsAreDefinerFunctionsAndTheHelpersInvokerOnesWithAFixedSearchPath() async throws {
        let rows = try await strings("""
            SELECT p.proname || ' ' || p.prosecdef || ' ' || (p.proconfig IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'))
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE (n.nspname = 'ops' AND p.proname IN ('block_medico', 'unblock_medico'))
                OR p.proname IN ('fila_medico_block', 'fila_medico_unblock', 'fila_guardrails_check', 'fila_guardrails_release')
             ORDER BY 1
            """)
        #expect(rows == [
            "block_medico true true", "fila_guardrails_check false true", "fila_guardrails_release false true",
            "fila_medico_block false true", "fila_medico_unblock false true", "unblock_medico true true",
        ])
    }
}
