import Database
import Foundation
import Observability

/// A message to enqueue. Validated before anything is written.
///
/// ```swift
/// let message = NewMessage(clienteID: "medico-42", telefone: "5511999990000", conteudo: "Olá!", tipo: .campanha,
///                          idempotencyKey: "campanha-7:medico-42")
/// let result = try await queue.enqueue(message, logger: logger)
/// ```
public struct NewMessage: Sendable, Hashable {
    public var clienteID: String
    /// Digits only, country code first: `5511999990000`.
    public var telefone: String
    public var conteudo: String
    public var tipo: MessageKind
    /// Higher goes first; -100…100.
    public var prioridade: Int
    public var maxTentativas: Int
    /// Not before this time; nil means now (the database's clock).
    public var agendarPara: Date?
    /// A producer's key for deduplication: enqueuing it twice yields one row.
    public var idempotencyKey: String?
    /// Follows the message through the worker's logs and into the provider request
    /// (``CorrelationID``'s rule); nil or empty is stored as NULL.
    public var correlationID: String?
    /// A JSON object, as text.
    public var metadata: String

    public init(
        clienteID: String,
        telefone: String,
        conteudo: String,
        tipo: MessageKind = .resposta,
        prioridade: Int = 0,
        maxTentativas: Int = 3,
        agendarPara: Date? = nil,
        idempotencyKey: String? = nil,
        correlationID: String? = nil,
        metadata: String = "{}"
    ) {
        self.clienteID = clienteID
        self.telefone = telefone
        self.conteudo = conteudo
        self.tipo = tipo
        self.prioridade = prioridade
        self.maxTentativas = maxTentativas
        self.agendarPara = agendarPara
        self.idempotencyKey = idempotencyKey
        self.correlationID = correlationID
        self.metadata = metadata
    }

    /// Limits, the same as the schema's CHECK constraints. Lengths are what Postgres's
    /// `length()` counts: Unicode code points, not Swift `Character`s (🇧🇷 is one
    /// Character and two code points).
    public enum Limits {
        public static let conteudoCodePoints = 4096
        public static let identifierCodePoints = 200
        public static let metadataBytes = 16 * 1024
        public static let prioridade = -100...100
        public static let maxTentativas = 1...100
        @available(*, deprecated, renamed: "conteudoCodePoints", message: "the limit counts Unicode code points")
        public static let conteudoCharacters = conteudoCodePoints
        @available(*, deprecated, renamed: "identifierCodePoints", message: "the limit counts Unicode code points")
        public static let identifierCharacters = identifierCodePoints
        /// `timestamptz`'s range, in microseconds from 2000-01-01 (4714-11-24 BC up to,
        /// not including, 294277-01-01).
        static let timestampMicroseconds: Range<Double> = -211_813_488_000_000_000..<9_223_371_331_200_000_000
    }

    /// Checks the message against every rule the schema enforces (and the text type's
    /// refusal of NUL), so a bad row is refused with a clear reason before the database
    /// sees it. A reason never quotes the message's content.
    public func validate() throws(MessageValidationError) {
        try Self.checkText(clienteID, field: "cliente_id")
        if !(1...Limits.identifierCodePoints).contains(clienteID.unicodeScalars.count) {
            throw MessageValidationError(field: "cliente_id", reason: "must be 1-\(Limits.identifierCodePoints) characters (Unicode code points)")
        }
        let digits = telefone.utf8
        if !(10...15).contains(digits.count) || !digits.allSatisfy({ (48...57).contains($0) }) {
            throw MessageValidationError(field: "telefone", reason: "must be 10-15 digits with the country code, e.g. 5511999990000")
        }
        try Self.checkText(conteudo, field: "conteudo")
        // Stricter than the CHECK (which trims spaces only): a message of line breaks is empty too.
        if conteudo.unicodeScalars.allSatisfy(\.properties.isWhitespace) {
            throw MessageValidationError(field: "conteudo", reason: "is empty")
        }
        if conteudo.unicodeScalars.count > Limits.conteudoCodePoints {
            throw MessageValidationError(field: "conteudo", reason: "is longer than \(Limits.conteudoCodePoints) characters (Unicode code points)")
        }
        if !Limits.prioridade.contains(prioridade) {
            throw MessageValidationError(field: "prioridade", reason: "must be between -100 and 100")
        }
        if !Limits.maxTentativas.contains(maxTentativas) {
            throw MessageValidationError(field: "max_tentativas", reason: "must be between 1 and 100")
        }
        if let agendarPara {
            let microseconds = agendarPara.timeIntervalSince(Date(timeIntervalSince1970: 946_684_800)) * 1_000_000
            if !Limits.timestampMicroseconds.contains(microseconds) {
                throw MessageValidationError(field: "agendar_para", reason: "is outside the range Postgres can store (4713 BC to 294276 AD)")
            }
        }
        if let key = idempotencyKey {
            try Self.checkText(key, field: "idempotency_key")
            if !(1...Limits.identifierCodePoints).contains(key.unicodeScalars.count) {
                throw MessageValidationError(field: "idempotency_key", reason: "must be 1-\(Limits.identifierCodePoints) characters (Unicode code points)")
            }
        }
        // Stricter than the column: the worker sends it to the provider as a header and
        // writes it into log lines. Empty is stored as NULL.
        if let id = correlationID, !id.isEmpty, !CorrelationID.isValid(id) {
            throw MessageValidationError(field: "correlation_id", reason: "must be \(CorrelationID.rule)")
        }
        if metadata.utf8.count > Limits.metadataBytes {
            throw MessageValidationError(field: "metadata", reason: "is larger than \(Limits.metadataBytes) bytes")
        }
        if metadata != "{}", let problem = JSONBText.problem(in: metadata, requireObject: true) {
            throw MessageValidationError(field: "metadata", reason: problem)
        }
    }

    /// Postgres text cannot hold U+0000: the insert would fail, taking its whole statement with it.
    private static func checkText(_ text: String, field: String) throws(MessageValidationError) {
        if text.utf8.contains(0) {
            throw MessageValidationError(field: field, reason: "contains a NUL character (U+0000), which Postgres cannot store")
        }
    }
}

/// Why a message was refused; nothing was written.
public struct MessageValidationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The column at fault, by its `fila_mensagens` name.
    public let field: String
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field) \(reason)" }
}
