#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import ServiceContextModule

/// The id that ties together everything one piece of work caused: an HTTP request, the job
/// run or messages it created, the worker's handling of each message, the provider request
/// and every log line on the way.
///
/// 1–128 characters from `A-Z a-z 0-9 - _ . : / @ + =`: enough for UUIDs, ULIDs, W3C trace
/// ids and names such as `campanha-7`, and safe as it is in an HTTP header, a log line, a
/// shell and a SQL literal.
///
/// ```swift
/// let id = CorrelationID(validating: header) ?? .generate()
/// try await Correlation.withID(id) {
///     logger.info("…")  // carries correlation_id when logging is bootstrapped by LogSetup
/// }
/// ```
public struct CorrelationID: Sendable, Hashable, CustomStringConvertible {
    public static let maximumLength = 128
    /// The characters allowed besides ASCII letters and digits.
    public static let punctuation: Set<UInt8> = Set("-_.:/@+=".utf8)

    public let value: String

    /// `text` when it follows the rule above, else nil.
    public init?(validating text: String) {
        guard Self.isValid(text) else { return nil }
        self.value = text
    }

    public static func isValid(_ text: String) -> Bool {
        (1...maximumLength).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    true
                default:
                    punctuation.contains(byte)
                }
            }
    }

    /// A new id: a random UUID in lower case.
    public static func generate() -> CorrelationID {
        CorrelationID(unchecked: UUID().uuidString.lowercased())
    }

    /// The id of a row that has no correlation id of its own: its UUID in lower case.
    public init(_ id: UUID) {
        self.init(unchecked: id.uuidString.lowercased())
    }

    private init(unchecked value: String) {
        self.value = value
    }

    public var description: String { value }

    /// Why `text` is not an id, for error messages.
    public static let rule = "1-\(maximumLength) characters from A-Z a-z 0-9 and \(String(decoding: punctuation.sorted(), as: UTF8.self))"
}

/// The current correlation id, carried task-locally in swift-service-context's
/// `ServiceContext` so that child tasks inherit it and a tracer added later sees it.
public enum Correlation {
    /// The HTTP header that carries the id in and out: requests to the API, the API's
    /// responses, and requests to WhatsApp providers.
    public static let headerName = "X-Correlation-ID"
    /// The logger metadata key, and the column name in `fila_mensagens` and `job_executions`.
    public static let metadataKey = "correlation_id"

    /// The id bound to the current task, if any.
    public static var current: CorrelationID? {
        ServiceContext.current?[CorrelationIDKey.self]
    }

    /// Runs `operation` with `id` as the current id (other values in the current context kept).
    public static func withID<T>(
        _ id: CorrelationID,
        isolation: isolated (any Actor)? = #isolation,
        operation: () async throws -> T
    ) async rethrows -> T {
        var context = ServiceContext.current ?? .topLevel
        context[CorrelationIDKey.self] = id
        return try await ServiceContext.withValue(context, operation: operation)
    }

    /// `logger` with the id in its metadata: for a logger that outlives the task-local scope
    /// or a process whose logging was not set up by ``LogSetup``.
    public static func logger(_ logger: Logger, with id: CorrelationID) -> Logger {
        var logger = logger
        logger[metadataKey: metadataKey] = .string(id.value)
        return logger
    }

    /// Adds `correlation_id` to every log line written while an id is bound, whatever logger
    /// writes it (a library's included). ``LogSetup`` installs it.
    public static let metadataProvider = Logger.MetadataProvider {
        guard let id = current else { return [:] }
        return [metadataKey: .string(id.value)]
    }
}

private enum CorrelationIDKey: ServiceContextKey {
    typealias Value = CorrelationID
    static var nameOverride: String? { Correlation.metadataKey }
}
