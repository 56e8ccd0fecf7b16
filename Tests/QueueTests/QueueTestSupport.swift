import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Queue
import Testing

let logger = TestDatabase.logger

func message(_ number: Int, tipo: MessageKind = .resposta, prioridade: Int = 0, key: String? = nil) -> NewMessage {
    NewMessage(
        clienteID: "medico-\(number)",
        telefone: String(format: "55119%08d", number),
        conteudo: "mensagem \(number)",
        tipo: tipo,
        prioridade: prioridade,
        idempotencyKey: key
    )
}

/// A row as psql shows it, for assertions.
struct Row: Sendable {
    let status: String
    let tentativas: Int
    let outcome: String?
    let reason: String?
    let workerID: String?
    let dueInSeconds: Double
}

extension MessageQueue {
    func row(_ id: UUID) async throws -> Row {
        let result = try await client.query(
            """
            SELECT status, tentativas, outcome, outcome_reason_code, worker_id,
                   extract(epoch FROM agendar_para - now())::float8
              FROM fila_mensagens WHERE id = \(id)
            """,
            logger: logger
        ).collect().first!.decode((String, Int32, String?, String?, String?, Double).self)
        return Row(status: result.0, tentativas: Int(result.1), outcome: result.2, reason: result.3, workerID: result.4, dueInSeconds: result.5)
    }

    func count(where condition: String = "true") async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM fila_mensagens WHERE \(condition)"), logger: logger)
            .collect().first!.decode(Int.self)
    }

    func execute(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    /// Registers a heartbeat for `workerID`, as a running worker would: last seen
    /// `lastSeenSecondsAgo`, after beating without a gap for an hour before that.
    func registerWorker(_ workerID: String, lastSeenSecondsAgo: Int = 0) async throws {
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at, beating_since)
            VALUES (\(workerID), 'worker', 'test', 1, 'test', now() - make_interval(secs => \(Double(lastSeenSecondsAgo))),
                    now() - make_interval(secs => \(Double(lastSeenSecondsAgo + 3600))))
            ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, beating_since = excluded.beating_since
            """,
            logger: logger
        )
    }

    /// The claims the database says `workerID` holds, ordered by row id.
    func heldClaims(of workerID: String) async throws -> [HeldClaim] {
        try await client.query(
            """
            SELECT id, (extract(epoch FROM processando_desde) * 1000000)::int8 FROM fila_mensagens
             WHERE worker_id = \(workerID) AND status = 'processando' ORDER BY id
            """,
            logger: logger
        ).collect().map {
            let (id, claimedAt) = try $0.decode((UUID, Int64).self)
            return HeldClaim(id: id, claimedAtMicroseconds: claimedAt)
        }
    }
}

/// Runs `sql` and expects it refused with SQLSTATE 22023 and a message containing `words`
/// (the `ops` and `fila` functions' answer to bad arguments).
func expectRefused(_ client: PostgresClient, _ sql: String, saying words: String, sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        _ = try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
        Issue.record("accepted: \(sql)", sourceLocation: sourceLocation)
    } catch let error as PSQLError {
        #expect(error.serverInfo?[.sqlState] == "22023", "\(sql): \(String(reflecting: error))", sourceLocation: sourceLocation)
        #expect(error.serverInfo?[.message]?.contains(words) == true, "\(sql): \(error.serverInfo?[.message] ?? "")", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(sql): \(error)", sourceLocation: sourceLocation)
    }
}

/// Runs `sql` and expects Postgres to refuse it for want of a privilege (SQLSTATE 42501): what
/// a role of migration 0019 may not do.
func expectDenied(_ client: PostgresClient, _ sql: String, sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        _ = try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
        Issue.record("allowed: \(sql)", sourceLocation: sourceLocation)
    } catch let error as PSQLError {
        #expect(error.serverInfo?[.sqlState] == "42501", "\(sql): \(String(reflecting: error))", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(sql): \(error)", sourceLocation: sourceLocation)
    }
}
