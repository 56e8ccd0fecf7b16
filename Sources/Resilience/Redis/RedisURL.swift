/// Where and how to reach Redis: `redis://[[user]:password@]host[:port][/db]`.
///
/// The port defaults to 6379 and the database to 0. A password (and user name, for
/// Redis 6 ACL users) may be percent-encoded. TLS (`rediss://`) and query parameters are
/// refused rather than silently ignored.
///
/// ```swift
/// let url = try RedisURL("redis://:s3cret@cache.internal:6380/2")
/// print(url) // redis://:***@cache.internal:6380/2
/// ```
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The ACL user; `nil` authenticates as the default user.
    public var username: String?
    /// `nil` sends no AUTH.
    public var password: String?
    /// The logical database to SELECT.
    public var database: Int

    public static let defaultPort = 6379

    public init(host: String, port: Int = RedisURL.defaultPort, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    public init(_ text: String) throws(RedisError) {
        let expected = "expected redis://[:password@]host[:port][/db]"
        guard !text.isEmpty else { throw Self.invalid("is empty") }
        guard text.first?.isWhitespace == false, text.last?.isWhitespace == false else {
            throw Self.invalid("has leading or trailing spaces")
        }
        guard let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].hasPrefix("//") else {
            throw Self.invalid("is not a URL (\(expected))")
        }
        let scheme = text[..<colon].lowercased()
        guard scheme != "rediss" else { throw Self.invalid("asks for TLS (rediss://), which is not supported; use redis://") }
        guard scheme == "redis" else { throw Self.invalid("has scheme '\(scheme)'; \(expected)") }
        var rest = text[text.index(colon, offsetBy: 3)...]

        // The last '@' ends the user info, so an unencoded '@' or '/' in a password
        // still parses; host, port and database never contain one.
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let separator = userInfo.firstIndex(of: ":") else {
                throw Self.invalid("has a user name without a password; write redis://:PASSWORD@host or redis://USER:PASSWORD@host")
            }
            let user = try Self.percentDecoded(userInfo[..<separator], part: "user name")
            let secret = try Self.percentDecoded(userInfo[userInfo.index(after: separator)...], part: "password")
            guard !secret.isEmpty else { throw Self.invalid("has an empty password") }
            username = user.isEmpty ? nil : user
            password = secret
        }

        guard !rest.contains("?"), !rest.contains("#") else {
            throw Self.invalid("has query parameters or a fragment; none are supported")
        }
        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = ""
        }

        let host: Substring
        let portText: Substring?
        if authority.hasPrefix("[") {
            // An IPv6 literal: [::1]:6379.
            guard let close = authority.firstIndex(of: "]") else { throw Self.invalid("has an unclosed '[' in its host") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let afterHost = authority[authority.index(after: close)...]
            if afterHost.isEmpty {
                portText = nil
            } else if afterHost.hasPrefix(":") {
                portText = afterHost.dropFirst()
            } else {
                throw Self.invalid("has text after its IPv6 host; \(expected)")
            }
        } else {
            let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw Self.invalid("has an IPv6 host without brackets (write redis://[::1]:6379)") }
            host = parts[0]
            portText = parts.count == 2 ? parts[1] : nil
        }
        guard !host.isEmpty else { throw Self.invalid("has no host") }
        guard !host.contains(where: { $0.isWhitespace }) else { throw Self.invalid("has spaces in its host") }

        var port = Self.defaultPort
        if let portText {
            guard let number = Self.decimal(portText), (1...65535).contains(number) else {
                throw Self.invalid("has port '\(portText)'; expected a number in 1-65535")
            }
            port = number
        }

        var database = 0
        if !path.isEmpty {
            guard let number = Self.decimal(path) else {
                throw Self.invalid("has database '\(path)'; expected a number such as /0")
            }
            database = number
        }

        self.init(host: String(host), port: port, username: username, password: password, database: database)
    }

    /// The URL with the password replaced by `***`: safe for logs and error messages.
    public var description: String {
        var text = "redis://"
        if password != nil { text += "\(username ?? ""):***@" }
        text += host.contains(":") ? "[\(host)]" : host
        return text + ":\(port)/\(database)"
    }

    /// `host:port`, for messages about reaching the server.
    var address: String {
        (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
    }

    private static func invalid(_ reason: String) -> RedisError {
        // The reason never quotes the user info, which may hold the password.
        RedisError(.invalidURL, "Redis URL \(reason)")
    }

    /// Only ASCII digits: `Int("+5")` would accept a sign.
    private static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 9, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }

    private static func percentDecoded(_ text: Substring, part: String) throws(RedisError) -> String {
        var bytes: [UInt8] = []
        var utf8 = text.utf8[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = utf8.popFirst().flatMap(hexValue), let low = utf8.popFirst().flatMap(hexValue) else {
                throw invalid("has a malformed %-escape in its \(part)")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
