import NIOCore

/// A reply in Redis's RESP2 protocol.
///
/// ```swift
/// let reply = try await connection.send(["INCRBY", "hits", "1"])
/// let hits = reply.int64 // Optional(1)
/// ```
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    /// An error reply (`-ERR unknown command`): the text after the `-`.
    case error(String)
    case integer(Int64)
    /// `nil` is the null bulk string (`$-1`), which is how `GET` says "no such key".
    case bulkString([UInt8]?)
    /// `nil` is the null array (`*-1`), which is how `BLPOP` says "timed out".
    case array([RESPValue]?)

    /// The number in an integer reply, or in a simple or bulk string holding only digits
    /// (Redis returns numbers as bulk strings from `GET`, `EVAL` and `INCRBYFLOAT`'s kin).
    public var int64: Int64? {
        switch self {
        case .integer(let value): value
        case .simpleString(let text): Int64(text)
        case .bulkString(let bytes?): Int64(String(decoding: bytes, as: UTF8.self))
        default: nil
        }
    }

    /// The text of a simple or non-null bulk string.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// Whether this is a null bulk string or a null array.
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): true
        default: false
        }
    }

    /// Appends `arguments` as a command: an array of bulk strings, the only form Redis
    /// accepts from clients besides the inline one.
    public static func writeCommand(_ arguments: [String], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            // Bulk lengths count bytes, not characters.
            buffer.writeString("$\(argument.utf8.count)\r\n")
            buffer.writeString(argument)
            buffer.writeString("\r\n")
        }
    }
}

/// Reads RESP2 values from a byte stream that may arrive in arbitrary pieces.
///
/// `parse` returns `nil` and leaves the buffer untouched until a whole value is there,
/// so a decoder can simply call it again when more bytes arrive. It re-reads a partial
/// value from its start each time, which is fine for the short replies this client
/// asks for.
public struct RESPParser: Sendable {
    /// Deeper nesting is refused: no reply we ask for nests more than a few levels, and
    /// recursion on a hostile stream must not exhaust the stack.
    static let maximumDepth = 64
    /// Simple strings, errors, integers and lengths are short; a longer line means the
    /// stream is not RESP (and waiting for its end would buffer without limit).
    static let maximumLineLength = 64 * 1024
    /// Redis's own limit for a bulk string (`proto-max-bulk-len`'s default).
    static let maximumBulkLength = 512 * 1024 * 1024

    public init() {}

    /// The next complete value in `buffer`, consuming its bytes; or `nil`, consuming
    /// nothing, when the buffer holds only part of one.
    public mutating func parse(_ buffer: inout ByteBuffer) throws(RedisError) -> RESPValue? {
        // Parse on a copy (copy-on-write makes it cheap) so an incomplete value leaves
        // the caller's reader index where it was.
        var cursor = buffer
        guard let value = try Self.parseValue(&cursor, depth: 0) else { return nil }
        buffer.moveReaderIndex(to: cursor.readerIndex)
        return value
    }

    private static func parseValue(_ buffer: inout ByteBuffer, depth: Int) throws(RedisError) -> RESPValue? {
        guard let type = buffer.readInteger(as: UInt8.self) else { return nil }
        switch type {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "$"), UInt8(ascii: "*"):
            break
        default:
            throw RedisError(.protocolError, "Redis sent a reply of unknown type byte \(type) (not RESP2)")
        }
        guard let line = try readLine(&buffer) else { return nil }
        switch type {
        case UInt8(ascii: "+"):
            return .simpleString(line)
        case UInt8(ascii: "-"):
            return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int64(line) else {
                throw RedisError(.protocolError, "Redis sent an integer reply that is not a number")
            }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1, length <= maximumBulkLength else {
                throw RedisError(.protocolError, "Redis sent a bulk string with an invalid length")
            }
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2, let bytes = buffer.readBytes(length: length) else { return nil }
            try readLineEnd(&buffer)
            return .bulkString(bytes)
        default:
            guard let count = Int(line), count >= -1 else {
                throw RedisError(.protocolError, "Redis sent an array with an invalid length")
            }
            if count == -1 { return .array(nil) }
            guard depth < maximumDepth else {
                throw RedisError(.protocolError, "Redis sent arrays nested more than \(maximumDepth) deep")
            }
            var elements: [RESPValue] = []
            // Every element takes at least 3 bytes, so a bogus count cannot make us
            // reserve more than the bytes already received.
            elements.reserveCapacity(min(count, buffer.readableBytes / 3))
            for _ in 0..<count {
                guard let element = try parseValue(&buffer, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        }
    }

    /// The text up to the next CRLF, consuming the CRLF; `nil` if the CRLF has not arrived.
    private static func readLine(_ buffer: inout ByteBuffer) throws(RedisError) -> String? {
        let carriageReturn = buffer.withUnsafeReadableBytes { $0.firstIndex(of: UInt8(ascii: "\r")) }
        guard let carriageReturn else {
            if buffer.readableBytes > maximumLineLength {
                throw RedisError(.protocolError, "Redis sent a line longer than \(maximumLineLength) bytes")
            }
            return nil
        }
        guard carriageReturn <= maximumLineLength else {
            throw RedisError(.protocolError, "Redis sent a line longer than \(maximumLineLength) bytes")
        }
        guard buffer.readableBytes >= carriageReturn + 2, let line = buffer.readString(length: carriageReturn) else { return nil }
        try readLineEnd(&buffer)
        return line
    }

    private static func readLineEnd(_ buffer: inout ByteBuffer) throws(RedisError) {
        guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\r"), buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\n") else {
            throw RedisError(.protocolError, "Redis sent a value not followed by CRLF")
        }
    }
}
