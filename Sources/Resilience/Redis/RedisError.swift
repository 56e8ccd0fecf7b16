/// An error from the Redis client, safe to show to a user as it is.
///
/// `description` never holds a password; `debugDescription` adds the code and the
/// underlying error for logs.
public struct RedisError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case connectionFailed
            case connectionClosed
            case timeout
            case serverError
            case protocolError
            case invalidURL
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Redis could not be reached, or refused the connection's AUTH or SELECT.
        public static let connectionFailed = Self(.connectionFailed)
        /// The connection closed (or was closed) before the reply arrived.
        public static let connectionClosed = Self(.connectionClosed)
        /// The caller's deadline passed before Redis answered.
        public static let timeout = Self(.timeout)
        /// Redis answered with an error reply (`-ERR …`); the message is the server's.
        public static let serverError = Self(.serverError)
        /// The bytes from the server are not valid RESP2.
        public static let protocolError = Self(.protocolError)
        /// A Redis URL that cannot be parsed.
        public static let invalidURL = Self(.invalidURL)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }

    public var debugDescription: String {
        var text = "RedisError(\(code)): \(message)"
        if let underlying { text += " underlying: \(String(reflecting: underlying))" }
        return text
    }
}
