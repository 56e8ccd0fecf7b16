import Foundation

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

    /// Limits, the same as the schema's CHECK constraints.
    public enum Limits {
        public static let conteudoCharacters = 4096
        public static let identifierCharacters = 200
        public static let metadataBytes = 16 * 1024
        public static let prioridade = -100...100
        public static let maxTentativas = 1...100
    }

    /// Checks the message against the rules the schema enforces, so a bad row is refused
    /// with a clear reason before the database sees it.
    public func validate() throws(MessageValidationError) {
        if clienteID.isEmpty || clienteID.count > Limits.identifierCharacters {
            throw MessageValidationError(field: "cliente_id", reason: "must be 1-\(Limits.identifierCharacters) characters")
        }
        let digits = telefone.utf8
        if !(10...15).contains(digits.count) || !digits.allSatisfy({ (48...57).contains($0) }) {
            throw MessageValidationError(field: "telefone", reason: "must be 10-15 digits with the country code, e.g. 5511999990000")
        }
        if conteudo.allSatisfy(\.isWhitespace) {
            throw MessageValidationError(field: "conteudo", reason: "is empty")
        }
        if conteudo.count > Limits.conteudoCharacters {
            throw MessageValidationError(field: "conteudo", reason: "is longer than \(Limits.conteudoCharacters) characters")
        }
        if !Limits.prioridade.contains(prioridade) {
            throw MessageValidationError(field: "prioridade", reason: "must be between -100 and 100")
        }
        if !Limits.maxTentativas.contains(maxTentativas) {
            throw MessageValidationError(field: "max_tentativas", reason: "must be between 1 and 100")
        }
        if let key = idempotencyKey, key.isEmpty || key.count > Limits.identifierCharacters {
            throw MessageValidationError(field: "idempotency_key", reason: "must be 1-\(Limits.identifierCharacters) characters")
        }
        if let id = correlationID, id.count > Limits.identifierCharacters {
            throw MessageValidationError(field: "correlation_id", reason: "is longer than \(Limits.identifierCharacters) characters")
        }
        if metadata.utf8.count > Limits.metadataBytes {
            throw MessageValidationError(field: "metadata", reason: "is larger than \(Limits.metadataBytes) bytes")
        }
        guard metadata == "{}" || (try? JSONSerialization.jsonObject(with: Data(metadata.utf8))) is [String: Any] else {
            throw MessageValidationError(field: "metadata", reason: "must be a JSON object")
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
