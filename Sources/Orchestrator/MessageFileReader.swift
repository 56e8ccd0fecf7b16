import Foundation
import Database
import Primitives
import Queue

/// Turns the lines of a JSON-lines or CSV file into messages for `fila enqueue`, one
/// message per line (CSV: per record, with a header naming the columns). A line that cannot
/// become a message is rejected with its number and reason; the others go on.
///
/// Columns use `fila_mensagens`' names: cliente_id, telefone, conteudo, tipo (required),
/// prioridade, max_tentativas, agendar_para (ISO 8601), idempotency_key, correlation_id,
/// metadata (a JSON object).
enum MessageFileFormat: String, CaseIterable, Sendable {
    case jsonl
    case csv
}

struct RejectedLine: Error, Sendable, Hashable, CustomStringConvertible {
    let line: Int
    let reason: String
    var description: String { "line \(line): \(reason)" }
}

enum MessageFileReader {
    static let columns: Set<String> = [
        "cliente_id", "telefone", "conteudo", "tipo", "prioridade", "max_tentativas", "agendar_para",
        "idempotency_key", "correlation_id", "metadata",
    ]

    /// A parsed record: the line it starts on and its fields as text (nil: absent).
    struct Record {
        let line: Int
        let fields: [String: String]
    }

    // MARK: - JSON lines

    /// The byte ranges of the non-blank lines of JSON-lines input, with their line numbers.
    /// Splits on newline bytes, with no Character processing: a campaign file has hundreds
    /// of thousands of lines.
    static func jsonLineRanges(_ data: Data) -> [(line: Int, range: Range<Int>)] {
        var ranges: [(line: Int, range: Range<Int>)] = []
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var start = 0
            var line = 1
            let count = bytes.count
            while start < count {
                var end = start
                while end < count && bytes[end] != 0x0A { end += 1 }
                var lineEnd = end
                if lineEnd > start && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                if (start..<lineEnd).contains(where: { bytes[$0] != 0x20 && bytes[$0] != 0x09 }) {
                    ranges.append((line, start..<lineEnd))
                }
                start = end + 1
                line += 1
            }
        }
        return ranges
    }

    /// Parses the given lines of `data` (from `jsonLineRanges`).
    static func messages(fromJSONLines data: Data, lines: some Collection<(line: Int, range: Range<Int>)>) -> [(line: Int, result: Result<NewMessage, RejectedLine>)] {
        let decoder = JSONDecoder()
        return data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            lines.map { entry in
                if let fields = fastFields(UnsafeRawBufferPointer(rebasing: bytes[entry.range])) {
                    return (entry.line, message(from: Record(line: entry.line, fields: fields)))
                }
                return (entry.line, message(fromJSONLine: data.subdata(in: entry.range), line: entry.line, decoder: decoder))
            }
        }
    }

    /// The line's fields through the fast scanner, or nil when the full decoder must look
    /// (unusual JSON, an unknown field, a value of the wrong type: it words the errors).
    static func fastFields(_ bytes: UnsafeRawBufferPointer) -> [String: String]? {
        guard let scanned = FlatJSONScanner.scan(bytes) else { return nil }
        var fields: [String: String] = [:]
        for (key, value) in scanned {
            guard columns.contains(key), key != "metadata" else { return nil }
            switch value {
            case .null:
                continue
            case .string(let text):
                fields[key] = text
            case .integer(let number):
                guard key == "prioridade" || key == "max_tentativas" else { return nil }
                fields[key] = String(number)
            }
        }
        return fields
    }

    static func messages(fromJSONLines data: Data) -> [(line: Int, result: Result<NewMessage, RejectedLine>)] {
        messages(fromJSONLines: data, lines: jsonLineRanges(data))
    }

    static func message(fromJSONLine data: Data, line: Int, decoder: JSONDecoder = JSONDecoder()) -> Result<NewMessage, RejectedLine> {
        let object: JSONLineObject
        do {
            object = try decoder.decode(JSONLineObject.self, from: data)
        } catch let rejection as JSONLineObject.Rejection {
            return .failure(RejectedLine(line: line, reason: rejection.reason))
        } catch {
            return .failure(RejectedLine(line: line, reason: "not a JSON object"))
        }
        return message(from: Record(line: line, fields: object.fields))
    }

    // MARK: - CSV (RFC 4180)

    /// Splits CSV text into records of fields, honouring quoted fields (with "" escapes,
    /// commas and newlines inside). Returns each record with the line it starts on.
    static func csvRecords(_ text: String) throws(RejectedLine) -> [(line: Int, fields: [String])] {
        var records: [(line: Int, fields: [String])] = []
        var fields: [String] = []
        var field = ""
        var inQuotes = false
        var fieldWasQuoted = false
        var line = 1
        var recordLine = 1
        var iterator = text.makeIterator()
        var pending: Character? = nil

        func nextCharacter() -> Character? {
            if let character = pending {
                pending = nil
                return character
            }
            return iterator.next()
        }

        func endRecord() {
            fields.append(field)
            if !(fields.count == 1 && fields[0].isEmpty && !fieldWasQuoted) {
                records.append((recordLine, fields))
            }
            fields = []
            field = ""
            fieldWasQuoted = false
        }

        while let character = nextCharacter() {
            if inQuotes {
                if character == "\"" {
                    if let next = nextCharacter() {
                        if next == "\"" {
                            field.append("\"")
                        } else {
                            inQuotes = false
                            pending = next
                        }
                    } else {
                        inQuotes = false
                    }
                } else {
                    if character == "\n" || character == "\r\n" { line += 1 }
                    field.append(character)
                }
                continue
            }
            switch character {
            case "\"" where field.isEmpty:
                inQuotes = true
                fieldWasQuoted = true
            case ",":
                fields.append(field)
                field = ""
                fieldWasQuoted = false
            case "\n", "\r\n":
                endRecord()
                line += 1
                recordLine = line
            default:
                field.append(character)
            }
        }
        if inQuotes { throw RejectedLine(line: recordLine, reason: "a quoted field is not closed") }
        if !field.isEmpty || !fields.isEmpty || fieldWasQuoted { endRecord() }
        return records
    }

    /// Maps CSV records to messages using the header record's column names.
    static func messages(fromCSV text: String) throws(RejectedLine) -> [(line: Int, result: Result<NewMessage, RejectedLine>)] {
        let records = try csvRecords(text)
        guard let header = records.first else { return [] }
        let names = header.fields.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        for name in names where !columns.contains(name) {
            throw RejectedLine(line: header.line, reason: "unknown column \(TerminalText.quoted(name)) in the header")
        }
        for required in ["cliente_id", "telefone", "conteudo", "tipo"] where !names.contains(required) {
            throw RejectedLine(line: header.line, reason: "the header has no '\(required)' column")
        }
        return records.dropFirst().map { record in
            guard record.fields.count == names.count else {
                return (record.line, .failure(RejectedLine(line: record.line, reason: "has \(record.fields.count) fields, the header has \(names.count)")))
            }
            var fields: [String: String] = [:]
            for (name, value) in zip(names, record.fields) where !value.isEmpty {
                fields[name] = value
            }
            return (record.line, message(from: Record(line: record.line, fields: fields)))
        }
    }

    // MARK: - Fields to message

    static func message(from record: Record) -> Result<NewMessage, RejectedLine> {
        func reject(_ reason: String) -> Result<NewMessage, RejectedLine> {
            .failure(RejectedLine(line: record.line, reason: reason))
        }
        let fields = record.fields
        guard let clienteID = fields["cliente_id"] else { return reject("cliente_id is missing") }
        guard let telefone = fields["telefone"] else { return reject("telefone is missing") }
        guard let conteudo = fields["conteudo"] else { return reject("conteudo is missing") }
        // tipo is required here: it decides how much of a doctor's daily budget a message
        // costs, and a campaign file must not slip through as replies by default.
        let kinds = MessageKind.allCases.map(\.rawValue).joined(separator: ", ")
        guard let text = fields["tipo"] else { return reject("tipo is missing (one of \(kinds))") }
        guard let tipo = MessageKind(rawValue: text) else { return reject("tipo \(TerminalText.quoted(text)) is not one of \(kinds)") }
        var message = NewMessage(clienteID: clienteID, telefone: telefone, conteudo: conteudo, tipo: tipo)
        if let text = fields["prioridade"] {
            guard let value = Int(text) else { return reject("prioridade \(TerminalText.quoted(text)) is not a whole number") }
            message.prioridade = value
        }
        if let text = fields["max_tentativas"] {
            guard let value = Int(text) else { return reject("max_tentativas \(TerminalText.quoted(text)) is not a whole number") }
            message.maxTentativas = value
        }
        if let text = fields["agendar_para"] {
            guard let date = parseTimestamp(text) else {
                return reject("agendar_para \(TerminalText.quoted(text)) is not an ISO 8601 time with a zone (2026-01-23T10:00:00-03:00)")
            }
            message.agendarPara = date
        }
        message.idempotencyKey = fields["idempotency_key"]
        message.correlationID = fields["correlation_id"]
        if let text = fields["metadata"] { message.metadata = text }
        do {
            try message.validate()
        } catch {
            return reject(error.description)
        }
        return .success(message)
    }

    static func parseTimestamp(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

/// One JSON-lines record: an object whose keys are column names and whose values are
/// strings, whole numbers (prioridade, max_tentativas), an object (metadata) or null.
struct JSONLineObject: Decodable {
    struct Rejection: Error {
        let reason: String
    }

    struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    var fields: [String: String] = [:]

    init(from decoder: any Decoder) throws {
        let container: KeyedDecodingContainer<Key>
        do {
            container = try decoder.container(keyedBy: Key.self)
        } catch {
            throw Rejection(reason: "not a JSON object")
        }
        for key in container.allKeys {
            let name = key.stringValue
            guard MessageFileReader.columns.contains(name) else { throw Rejection(reason: "unknown field \(TerminalText.quoted(name))") }
            if try container.decodeNil(forKey: key) { continue }
            switch name {
            case "prioridade", "max_tentativas":
                if let whole = try? container.decode(Int.self, forKey: key) {
                    fields[name] = String(whole)
                } else if let text = try? container.decode(String.self, forKey: key) {
                    fields[name] = text
                } else if (try? container.decode(Double.self, forKey: key)) != nil {
                    throw Rejection(reason: "\(name) must be a whole number")
                } else {
                    throw Rejection(reason: "\(name) has the wrong type")
                }
            case "metadata":
                guard let value = try? container.decode(JSONValue.self, forKey: key), case .object = value else {
                    throw Rejection(reason: "metadata has the wrong type")
                }
                fields[name] = value.text
            default:
                guard let text = try? container.decode(String.self, forKey: key) else {
                    throw Rejection(reason: "\(name) has the wrong type")
                }
                fields[name] = text
            }
        }
    }
}
