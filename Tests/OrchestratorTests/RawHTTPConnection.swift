#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Primitives

/// A plain TCP connection to a local HTTP server, for what an HTTP client library will not
/// do: declare a body it never sends, send half a request head, or send nothing at all.
/// Blocking calls run on a thread of their own, never on the tasks the server needs.
enum RawHTTPConnection {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Connects to `localhost:port`, writes each of `send`, and returns the first response
    /// (head and body, by its Content-Length) as text.
    static func exchange(port: Int, send: [[UInt8]], within timeout: Duration = .seconds(30)) async throws -> String {
        try await onThread {
            let socket = try connect(port: port, timeout: timeout)
            defer { close(socket) }
            for bytes in send { try write(socket, bytes) }
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                if let text = String(validating: received, as: UTF8.self), let end = text.range(of: "\r\n\r\n") {
                    let head = text[..<end.lowerBound].lowercased()
                    let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                    if text[end.upperBound...].utf8.count >= length { return text }
                }
                let count = recv(socket, &buffer, buffer.count, 0)
                guard count > 0 else {
                    throw Failure(description: "the connection ended (\(count)) before a whole response; got: \(String(decoding: received, as: UTF8.self).prefix(200))")
                }
                received += buffer[0..<count]
            }
        }
    }

    /// Connects, writes each of `send`, then waits up to `timeout` for the server to close
    /// the connection without answering: true when it did.
    static func isClosedByServer(port: Int, send: [[UInt8]], within timeout: Duration) async throws -> Bool {
        try await onThread {
            let socket = try connect(port: port, timeout: timeout)
            defer { close(socket) }
            for bytes in send { try write(socket, bytes) }
            var buffer = [UInt8](repeating: 0, count: 4_096)
            while true {
                let count = recv(socket, &buffer, buffer.count, 0)
                if count == 0 { return true }  // closed by the server
                if count < 0 { return errno == ECONNRESET }  // reset, or the receive timeout passed
            }
        }
    }

    private static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    private static func connect(port: Int, timeout: Duration) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo("localhost", String(port), &hints, &list) == 0, let first = list else {
            throw Failure(description: "cannot resolve localhost")
        }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let address = entry {
            let socket = Glibc.socket(address.pointee.ai_family, address.pointee.ai_socktype, address.pointee.ai_protocol)
            if socket >= 0 {
                var wait = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
                setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
                if Glibc.connect(socket, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 { return socket }
                close(socket)
            }
            entry = address.pointee.ai_next
        }
        throw Failure(description: "cannot connect to localhost:\(port)")
    }

    private static func write(_ socket: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { throw Failure(description: "write failed (errno \(errno))") }
            offset += written
        }
    }
}
