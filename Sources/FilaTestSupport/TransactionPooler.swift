import Database
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc

private let streamSocketType = Int32(SOCK_STREAM.rawValue)
private let sendFlags = Int32(MSG_NOSIGNAL)
#elseif canImport(Darwin)
import Darwin

private let streamSocketType = SOCK_STREAM
private let sendFlags: Int32 = 0
#endif

/// A stand-in for PgBouncer in transaction mode, at its least accommodating, in front of a
/// test server that listens on a Unix socket and trusts its clients.
///
/// Every transaction of a client, and every statement it runs outside one, goes to a server
/// connection the client has not used before; server connections outlive their clients, as
/// a pooler's do, until the pooler stops. So nothing tied to a session (a session advisory
/// lock, a `SET`, a prepared statement) follows a client from one transaction to the next,
/// and whatever a client leaves on a session stays there. The pooler listens on a Unix
/// socket of its own, in a folder of mode 0700.
///
/// ```swift
/// try await TransactionPooler.with(upstream: url) { pooler in
///     try await pooler.url.withConnection(logger: logger) { … }
/// }
/// ```
public final class TransactionPooler: Sendable {
    /// Where clients connect: the upstream database, through the pooler.
    public let url: DatabaseURL
    private let directory: String
    private let upstreamPath: String
    private let listener: Int32
    /// Every descriptor the pooler opened; all are shut down and closed when it stops.
    private let descriptors = Mutex<Set<Int32>>([])
    private let activeThreads = Atomic<Int>(0)

    /// Runs `body` with a pooler in front of `upstream`, stopped afterwards.
    public static func with<Result: Sendable>(upstream: DatabaseURL, _ body: (TransactionPooler) async throws -> Result) async throws -> Result {
        let pooler = try TransactionPooler(upstream: upstream)
        pooler.start()
        do {
            let result = try await body(pooler)
            await pooler.stop()
            return result
        } catch {
            await pooler.stop()
            throw error
        }
    }

    private init(upstream: DatabaseURL) throws {
        guard let upstreamDirectory = upstream.socketDirectory else {
            throw TestSetupError("the transaction pooler needs a server on a Unix socket (host=/socket/dir), not \(upstream)")
        }
        upstreamPath = "\(upstreamDirectory)/.s.PGSQL.\(upstream.port)"
        var template = Array("/tmp/fila-pooler-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw TestSetupError("cannot create a folder for the pooler's socket") }
        directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var url = upstream
        url.socketDirectory = directory
        url.port = 5432
        self.url = url
        listener = socket(AF_UNIX, streamSocketType, 0)
        guard listener >= 0 else { throw TestSetupError("cannot create the pooler's socket") }
        var address = try Self.address("\(directory)/.s.PGSQL.5432")
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(listener, 64) == 0 else {
            close(listener)
            throw TestSetupError("cannot listen on the pooler's socket in \(directory)")
        }
        descriptors.withLock { _ = $0.insert(listener) }
    }

    private func start() {
        spawn { [self] in
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return  // shut down
                }
                descriptors.withLock { _ = $0.insert(client) }
                spawn { [self] in serve(client) }
            }
        }
    }

    /// Shuts every connection down, waits for the pooler's threads to notice, then closes.
    private func stop() async {
        let all = descriptors.withLock { $0 }
        for descriptor in all { shutdown(descriptor, Int32(SHUT_RDWR)) }
        for _ in 0..<250 where activeThreads.load(ordering: .acquiring) > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for descriptor in all { close(descriptor) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        activeThreads.add(1, ordering: .acquiringAndReleasing)
        let thread = Thread { [self] in
            body()
            activeThreads.subtract(1, ordering: .acquiringAndReleasing)
        }
        thread.start()
    }

    // MARK: - One client

    private struct ConnectionEnded: Error {}

    private func serve(_ client: Int32) {
        // The client sees its connection end; the server sessions it used stay open.
        defer { shutdown(client, Int32(SHUT_RDWR)) }
        do {
            let startup = try readStartup(client)
            // The first server connection answers the client's start-up (authentication,
            // parameters, its key); later ones are opened silently.
            var current: Int32? = try openServer(startup, answering: client)
            while true {
                let message = try readMessage(client)
                if message[0] == UInt8(ascii: "X") { return }  // Terminate: sessions stay open
                if current == nil { current = try openServer(startup, answering: nil) }
                guard let server = current else { return }
                try write(server, message)
                // A Sync or a simple Query ends with ReadyForQuery; idle means the transaction
                // is over, and the next one goes elsewhere.
                if message[0] == UInt8(ascii: "S") || message[0] == UInt8(ascii: "Q") {
                    if try relayUntilReady(from: server, to: client) == UInt8(ascii: "I") { current = nil }
                }
            }
        } catch {
            return
        }
    }

    /// The start-up packet, after refusing SSL and GSS encryption requests.
    private func readStartup(_ client: Int32) throws -> [UInt8] {
        while true {
            let lengthBytes = try read(client, count: 4)
            let length = Int(Self.int32(lengthBytes, at: 0))
            guard length >= 8, length < 10_000 else { throw ConnectionEnded() }
            let body = try read(client, count: length - 4)
            switch Self.int32(body, at: 0) {
            case 80_877_103, 80_877_104:  // SSLRequest, GSSENCRequest: not here
                try write(client, [UInt8(ascii: "N")])
            case 80_877_102:  // CancelRequest: not supported
                throw ConnectionEnded()
            default:
                return lengthBytes + body
            }
        }
    }

    /// Opens a server connection and runs the start-up on it; only trust is supported.
    private func openServer(_ startup: [UInt8], answering client: Int32?) throws -> Int32 {
        let server = socket(AF_UNIX, streamSocketType, 0)
        guard server >= 0 else { throw ConnectionEnded() }
        descriptors.withLock { _ = $0.insert(server) }
        var address = try Self.address(upstreamPath)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw ConnectionEnded() }
        try write(server, startup)
        while true {
            let message = try readMessage(server)
            if let client { try write(client, message) }
            switch message[0] {
            case UInt8(ascii: "R") where Self.int32(message, at: 5) != 0:
                throw ConnectionEnded()  // a password is asked for: the pooler only handles trust
            case UInt8(ascii: "E"):
                throw ConnectionEnded()
            case UInt8(ascii: "Z"):
                return server
            default:
                continue
            }
        }
    }

    /// Relays the server's messages to the client up to ReadyForQuery; returns its status.
    private func relayUntilReady(from server: Int32, to client: Int32) throws -> UInt8 {
        while true {
            let message = try readMessage(server)
            try write(client, message)
            if message[0] == UInt8(ascii: "Z") { return message[5] }
        }
    }

    // MARK: - Bytes

    /// One message: its type byte, length and body, as they travel.
    private func readMessage(_ descriptor: Int32) throws -> [UInt8] {
        let header = try read(descriptor, count: 5)
        let length = Int(Self.int32(header, at: 1))
        guard length >= 4, length < 1 << 30 else { throw ConnectionEnded() }
        return header + (try read(descriptor, count: length - 4))
    }

    private func read(_ descriptor: Int32, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let received = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + done, count - done, 0) }
            if received < 0 && errno == EINTR { continue }
            guard received > 0 else { throw ConnectionEnded() }
            done += received
        }
        return bytes
    }

    private func write(_ descriptor: Int32, _ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let sent = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress! + done, bytes.count - done, sendFlags) }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { throw ConnectionEnded() }
            done += sent
        }
    }

    private static func int32(_ bytes: [UInt8], at offset: Int) -> Int32 {
        Int32(bitPattern: UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
    }

    private static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw TestSetupError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        return address
    }
}
