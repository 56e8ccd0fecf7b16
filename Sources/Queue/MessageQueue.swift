#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO

/// The message queue on `fila_mensagens`: enqueue, claim, outcomes, rescue, expiry, metrics.
///
/// Every operation is one set-based statement, whatever the number of rows. Claims use
/// `FOR UPDATE SKIP LOCKED`, so any number of workers on any number of machines share the
/// table without blocking one another; delivery is at least once and producers deduplicate
/// with `idempotency_key`.
///
/// ```swift
/// let queue = MessageQueue(client: client)
/// try await queue.enqueue([message], logger: logger)
/// let claimed = try await queue.claim(workerID: "host:123:ab12", limit: 100, logger: logger)
/// ```
public struct MessageQueue: Sendable {
    public let client: PostgresClient

    /// Rows per INSERT statement when enqueuing many.
    public static let enqueueChunkSize = 5_000

    public init(client: PostgresClient) {
        self.client = client
    }

    // MARK: - Enqueue

    /// Enqueues one message. A duplicate `idempotency_key` returns the existing row's id.
    @discardableResult
    public func enqueue(_ message: NewMessage, logger: Logger) async throws -> EnqueueResult {
        try await enqueue([message], logger: logger)[0]
    }

    /// Enqueues many messages, `enqueueChunkSize` rows per statement; results are in input
    /// order. Every message is validated first: one invalid message refuses the whole call
    /// and nothing is written.
    public func enqueue(_ messages: [NewMessage], logger: Logger) async throws -> [EnqueueResult] {
        try Self.validate(messages)
        return try await client.withConnection { connection in
            try await Self.insert(messages, on: connection, logger: logger)
        }
    }

    /// Enqueues inside the caller's transaction: the messages exist only if it commits.
    ///
    /// ```swift
    /// try await client.withTransaction(logger: logger) { connection in
    ///     try await connection.query("UPDATE campanhas SET enviada = true WHERE id = \(id)", logger: logger)
    ///     try await MessageQueue.enqueue(messages, on: connection, logger: logger)
    /// }
    /// ```
    public static func enqueue(_ messages: [NewMessage], on connection: PostgresConnection, logger: Logger) async throws -> [EnqueueResult] {
        try validate(messages)
        return try await insert(messages, on: connection, logger: logger)
    }

    static func validate(_ messages: [NewMessage]) throws(EnqueueError) {
        for (index, message) in messages.enumerated() {
            do {
                try message.validate()
            } catch {
                throw EnqueueError(index: index, validation: error)
            }
        }
    }

    private static func insert(_ messages: [NewMessage], on connection: PostgresConnection, logger: Logger) async throws -> [EnqueueResult] {
        var results: [EnqueueResult] = []
        results.reserveCapacity(messages.count)
        var start = 0
        while start < messages.count {
            let end = min(start + enqueueChunkSize, messages.count)
            results += try await insertChunk(messages[start..<end], on: connection, logger: logger)
            start = end
        }
        return results
    }

    /// One INSERT … SELECT FROM unnest(…) for the chunk. Ids are generated here so that each
    /// input knows its row; a row skipped by ON CONFLICT is a duplicate, whose existing id is
    /// looked up by key.
    private static func insertChunk(_ messages: ArraySlice<NewMessage>, on connection: PostgresConnection, logger: Logger) async throws -> [EnqueueResult] {
        let now = Date()
        let ids = messages.map { _ in TimeOrderedID.make(at: now) }
        // Arrays cannot carry NULL elements here, so absent values travel as sentinels
        // ('' for text, the epoch for a time) and become NULL again in SQL.
        let epoch = Date(timeIntervalSince1970: 0)
        let query: PostgresQuery = """
            INSERT INTO fila_mensagens
                (id, cliente_id, telefone, conteudo, tipo, prioridade, max_tentativas, agendar_para,
                 idempotency_key, correlation_id, metadata)
            SELECT id, cliente_id, telefone, conteudo, tipo, prioridade, max_tentativas,
                   coalesce(nullif(agendar_para, 'epoch'::timestamptz), now()),
                   nullif(idempotency_key, ''), nullif(correlation_id, ''), metadata::jsonb
            FROM unnest(
                \(ids)::uuid[], \(messages.map(\.clienteID))::text[], \(messages.map(\.telefone))::text[],
                \(messages.map(\.conteudo))::text[], \(messages.map(\.tipo.rawValue))::text[],
                \(messages.map { Int16($0.prioridade) })::int2[], \(messages.map { Int32($0.maxTentativas) })::int4[],
                \(messages.map { $0.agendarPara ?? epoch })::timestamptz[],
                \(messages.map { $0.idempotencyKey ?? "" })::text[], \(messages.map { $0.correlationID ?? "" })::text[],
                \(messages.map(\.metadata))::text[]
            ) AS input(id, cliente_id, telefone, conteudo, tipo, prioridade, max_tentativas, agendar_para,
                       idempotency_key, correlation_id, metadata)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """
        var inserted = Set<UUID>()
        do {
            for try await id in try await connection.query(query, logger: logger).decode(UUID.self) {
                inserted.insert(id)
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "enqueue failed")
        }
        guard inserted.count < ids.count else {
            return ids.map { EnqueueResult(id: $0, inserted: true) }
        }

        let duplicateKeys = zip(ids, messages).compactMap { id, message in inserted.contains(id) ? nil : message.idempotencyKey }
        var existing: [String: UUID] = [:]
        let lookup: PostgresQuery = "SELECT idempotency_key, id FROM fila_mensagens WHERE idempotency_key = ANY(\(duplicateKeys)::text[])"
        for try await (key, id) in try await connection.query(lookup, logger: logger).decode((String, UUID).self) {
            existing[key] = id
        }
        return zip(ids, messages).map { id, message in
            if inserted.contains(id) { return EnqueueResult(id: id, inserted: true) }
            // A key repeated inside one batch resolves to the row its first copy created.
            return EnqueueResult(id: message.idempotencyKey.flatMap { existing[$0] } ?? id, inserted: false)
        }
    }

    // MARK: - Claim

    /// Claims up to `limit` due messages for `workerID` in one statement: highest priority
    /// first, then earliest schedule, and returns them in that order. Rows another worker is
    /// claiming are skipped, not waited for.
    ///
    /// The statement is `fila_claim` (migration 0021), planned once per connection. Due rows
    /// are read one priority at a time (`fila_mensagens_pending_priorities()`, highest first),
    /// each a range of the pending index that ends at the first row not yet due, so the cost of
    /// a claim does not grow with rows scheduled for later. The outer `LIMIT` stops the nested
    /// loop as soon as the batch is full: no row of a lower priority is read or locked while a
    /// higher one still has due rows to give.
    public func claim(workerID: String, limit: Int, logger: Logger) async throws -> [ClaimedMessage] {
        var claimed: [ClaimedMessage] = []
        claimed.reserveCapacity(limit)
        let rows = try await client.query(Self.claimQuery(workerID: workerID, limit: limit), logger: logger)
        for try await (id, clienteID, telefone, conteudo, tipo, prioridade, tentativas, maxTentativas, correlationID, metadata, token)
            in rows.decode((UUID, String, String, String, String, Int16, Int32, Int32, String, String, Int64).self)
        {
            claimed.append(
                ClaimedMessage(
                    id: id,
                    clienteID: clienteID,
                    telefone: telefone,
                    conteudo: conteudo,
                    tipo: MessageKind(rawValue: tipo) ?? .resposta,
                    prioridade: Int(prioridade),
                    tentativas: Int(tentativas),
                    maxTentativas: Int(maxTentativas),
                    correlationID: correlationID.isEmpty ? nil : correlationID,
                    metadata: metadata,
                    claim: ClaimToken(workerID: workerID, tentativas: Int32(tentativas), claimedAtMicroseconds: token)
                )
            )
        }
        return claimed
    }

    /// The claim's one statement (also explained by the tests, whose plan checks read it).
    static func claimQuery(workerID: String, limit: Int) -> PostgresQuery {
        """
        SELECT id, cliente_id, telefone, conteudo, tipo, prioridade, tentativas, max_tentativas,
               correlation_id, metadata, claimed_at
          FROM fila_claim(\(workerID), \(Int32(limit)))
        """
    }
}

/// What enqueuing one message did.
public struct EnqueueResult: Sendable, Hashable {
    /// The row's id: new, or the existing row with the same idempotency key.
    public let id: UUID
    /// False when the idempotency key already existed and nothing was written.
    public let inserted: Bool
}

/// An enqueue refused because one message is invalid; nothing was written.
public struct EnqueueError: Error, Sendable, CustomStringConvertible {
    /// The position of the invalid message in the input.
    public let index: Int
    public let validation: MessageValidationError

    public var description: String { "message \(index + 1): \(validation)" }
}

/// Proof of a claim, checked by every write that ends the attempt: the row must still be
/// `processando`, held by this worker, at the same attempt, from the same claim.
public struct ClaimToken: Sendable, Hashable {
    public let workerID: String
    public let tentativas: Int32
    /// `processando_desde` in microseconds since the epoch, compared exactly in SQL.
    public let claimedAtMicroseconds: Int64
}

/// A message a worker holds.
public struct ClaimedMessage: Sendable, Hashable {
    public let id: UUID
    public let clienteID: String
    public let telefone: String
    public let conteudo: String
    public let tipo: MessageKind
    public let prioridade: Int
    /// Attempts already spent before this one.
    public let tentativas: Int
    public let maxTentativas: Int
    public let correlationID: String?
    public let metadata: String
    public let claim: ClaimToken
}
