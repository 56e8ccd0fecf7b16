#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import Observability
import Primitives
import Queue

/// `POST /fila` and `POST /fila/batch`: enqueue over HTTP, for producers that cannot reach
/// Postgres (the others call `fila.enqueue` in their own transaction). The fields and rules
/// are `fila enqueue`'s JSON lines; the producer token is required.
///
/// ```
/// POST /fila
/// Authorization: Bearer $PRODUCER_TOKEN
/// {"cliente_id": "medico-42", "telefone": "5511999990000", "conteudo": "Olá", "tipo": "resposta", "idempotency_key": "pedido-981"}
/// ```
///
/// - 201 `{"id", "inserted": true}`; 200 with `inserted: false` when the idempotency key was
///   already used (the existing row's id).
/// - A batch is a JSON array of such objects, at most `maximumBatch`: all are checked before
///   any is written, and one bad message refuses the batch (400, each at fault in
///   `error.rejected` with its position and reason). 201 when any was inserted, 200 when all
///   were duplicates; `results` say what each position became.
/// - A message without a `correlation_id` gets the request's (`X-Correlation-ID`), so a
///   batch can be followed as one.
struct EnqueueAPI: Sendable {
    let queue: MessageQueue
    let producer: AdminAuthorization<APIRequestContext>
    let logger: Logger

    /// The most messages one batch may hold (more: 413).
    static let maximumBatch = 1000

    struct Enqueued: ResponseEncodable, Sendable {
        let id: UUID
        let inserted: Bool
    }

    struct BatchResult: Encodable, Sendable {
        let posicao: Int
        let id: UUID
        let inserted: Bool
    }

    struct Batch: ResponseEncodable, Sendable {
        let results: [BatchResult]
        let inserted: Int
        let duplicates: Int
    }

    func register(on router: Router<APIRequestContext>) {
        let fila = router.group("/fila")
            .add(middleware: producer)
            .add(middleware: DatabaseFailureMiddleware(logger: logger))
        fila.post { request, context in
            var request = request
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let message = try Self.message(from: Data(buffer: body), correlationID: Correlation.current)
            let result = try await queue.enqueue(message, logger: logger)
            return JSONResponse(Enqueued(id: result.id, inserted: result.inserted), status: result.inserted ? .created : .ok)
        }
        fila.post("batch") { request, context in
            var request = request
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let messages = try Self.messages(from: Data(buffer: body), correlationID: Correlation.current)
            let results = try await queue.enqueue(messages, logger: logger)
            let inserted = results.filter(\.inserted).count
            logger.info("enqueued over HTTP", metadata: ["fila.inserted": .stringConvertible(inserted), "fila.duplicates": .stringConvertible(results.count - inserted)])
            return JSONResponse(
                Batch(
                    results: results.enumerated().map { BatchResult(posicao: $0.offset + 1, id: $0.element.id, inserted: $0.element.inserted) },
                    inserted: inserted, duplicates: results.count - inserted
                ),
                status: inserted > 0 ? .created : .ok
            )
        }
    }

    static let example = #"send {"cliente_id": "medico-42", "telefone": "5511999990000", "conteudo": "…", "tipo": "resposta"} as JSON"#

    /// One message from a JSON object, or a 400 saying what is wrong with it.
    static func message(from body: Data, correlationID: CorrelationID?) throws(APIError) -> NewMessage {
        guard !body.isEmpty else {
            throw APIError(status: .badRequest, code: "invalid_body", message: "the body is empty: \(example)")
        }
        switch MessageFileReader.message(fromJSONLine: body, line: 1) {
        case .success(var message):
            if message.correlationID == nil, let correlationID { message.correlationID = correlationID.value }
            return message
        case .failure(let rejected):
            throw APIError(status: .badRequest, code: "invalid_message", message: rejected.reason)
        }
    }

    /// Every message of a JSON array, or a 400 naming each one at fault (413 over the limit).
    static func messages(from body: Data, correlationID: CorrelationID?) throws(APIError) -> [NewMessage] {
        guard case .array(let items)? = try? JSONDecoder().decode(JSONValue.self, from: body) else {
            throw APIError(status: .badRequest, code: "invalid_body", message: "the body is not a JSON array of messages: [\(example.dropFirst(5).dropLast(8))]")
        }
        guard !items.isEmpty else {
            throw APIError(status: .badRequest, code: "invalid_body", message: "the batch is empty")
        }
        guard items.count <= maximumBatch else {
            throw APIError(status: .contentTooLarge, code: "batch_too_large", message: "at most \(maximumBatch) messages per batch; this one has \(items.count)")
        }
        // Each item is read from the bytes the producer sent, as `fila enqueue` reads a line,
        // not from a re-encoding of it, which need not be what was sent.
        guard let ranges = Self.elementRanges(ofArray: body), ranges.count == items.count else {
            throw APIError(status: .badRequest, code: "invalid_body", message: "the body is not a JSON array of messages")
        }
        var messages: [NewMessage] = []
        var rejected: [APIError.Rejection] = []
        for item in MessageFileReader.messages(fromJSONLines: body, lines: ranges.enumerated().map { (line: $0.offset + 1, range: $0.element) }) {
            switch item.result {
            case .success(var message):
                if message.correlationID == nil, let correlationID { message.correlationID = correlationID.value }
                messages.append(message)
            case .failure(let reason):
                rejected.append(.init(posicao: item.line, reason: reason.reason))
            }
        }
        guard rejected.isEmpty else {
            throw APIError(
                status: .badRequest, code: "invalid_messages",
                message: "\(rejected.count) of \(items.count) messages are invalid; nothing was enqueued", rejected: rejected
            )
        }
        return messages
    }

    /// The byte ranges of a JSON array's items, or nil when `body` is not one array. Only
    /// the nesting is followed (strings and their escapes included); the items themselves are
    /// checked by whoever reads them.
    static func elementRanges(ofArray body: Data) -> [Range<Int>]? {
        body.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> [Range<Int>]? in
            func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }
            var index = 0
            while index < bytes.count, isSpace(bytes[index]) { index += 1 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "[") else { return nil }
            index += 1
            var ranges: [Range<Int>] = []
            var depth = 0
            var start: Int? = nil
            var inString = false
            var escaped = false
            while index < bytes.count {
                let byte = bytes[index]
                if inString {
                    if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                } else if byte == UInt8(ascii: "\"") {
                    inString = true
                    if start == nil { start = index }
                } else if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") {
                    if start == nil { start = index }
                    depth += 1
                } else if (byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}")) && depth > 0 {
                    depth -= 1
                } else if depth == 0 && (byte == UInt8(ascii: ",") || byte == UInt8(ascii: "]")) {
                    guard let first = start else {
                        // "[]" is an empty array; an empty item ("[1,,2]") is not JSON.
                        return byte == UInt8(ascii: "]") && ranges.isEmpty ? [] : nil
                    }
                    var end = index
                    while end > first, isSpace(bytes[end - 1]) { end -= 1 }
                    ranges.append(first..<end)
                    start = nil
                    if byte == UInt8(ascii: "]") {
                        index += 1
                        while index < bytes.count, isSpace(bytes[index]) { index += 1 }
                        return index == bytes.count ? ranges : nil
                    }
                } else if !isSpace(byte) && start == nil {
                    start = index
                }
                index += 1
            }
            return nil
        }
    }
}
