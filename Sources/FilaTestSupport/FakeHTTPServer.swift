import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Something that carries HTTP headers: a request as received, or as a fake recorded it.
public protocol HasHeaders {
    var headers: [(name: String, value: String)] { get }
}

extension HasHeaders {
    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }
}

/// One HTTP request as a fake server received it.
public struct FakeRequest: Sendable, HasHeaders {
    public let method: String
    /// Without the query string, still percent-encoded.
    public let path: String
    public let query: String?
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    public init(method: String, path: String, query: String?, headers: [(name: String, value: String)], body: [UInt8]) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// What a fake server answers.
public struct FakeResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String
    /// Headers beyond Content-Type and Content-Length.
    public var headers: [(name: String, value: String)]

    public init(status: Int, contentType: String = "application/json; charset=utf-8", body: String, headers: [(name: String, value: String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public static func json(_ status: Int, _ body: String) -> FakeResponse {
        FakeResponse(status: status, body: body)
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 (a free port) that answers every request with an
/// async handler: the base of the fake providers. Keep-alive works as with a real server.
///
/// In an `outage` the open connections are closed and every request that arrives is met by
/// closing its connection without an answer, so clients see a network error, not a status.
/// (The request is read first: a connection dropped before it carries a request would only
/// make a client's pool open another, and a close with unread data becomes a reset.)
///
/// ```swift
/// let server = try await FakeHTTPServer.start { request in .json(200, #"{"ok":true}"#) }
/// // … send requests to server.baseURL …
/// await server.shutdown()
/// ```
public final class FakeHTTPServer: Sendable {
    public typealias Handler = @Sendable (FakeRequest) async -> FakeResponse

    public let port: Int
    private let channel: any Channel
    private let connections: FakeConnections

    private init(port: Int, channel: any Channel, connections: FakeConnections) {
        self.port = port
        self.channel = channel
        self.connections = connections
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// - Parameter port: 0 for any free port; a fake restarted after a simulated outage
    ///   passes the port it had, so its clients' URLs stay valid.
    public static func start(port: Int = 0, handler: @escaping Handler) async throws -> FakeHTTPServer {
        let connections = FakeConnections(handler: handler)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try child.pipeline.syncOperations.addHandler(FakeHTTPHandler(connections: connections))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        guard let port = channel.localAddress?.port else {
            channel.close(promise: nil)
            throw TestSetupError("fake HTTP server: bound to no port")
        }
        return FakeHTTPServer(port: port, channel: channel, connections: connections)
    }

    /// While true, requests are answered by closing the connection (setting it closes the open ones).
    public var outage: Bool {
        get { connections.isInOutage }
        set { connections.setOutage(newValue) }
    }

    /// Stops listening and closes every connection. Handlers still running finish on their own;
    /// their answers go nowhere.
    public func shutdown() async {
        channel.close(promise: nil)
        try? await channel.closeFuture.get()
        connections.closeAll()
    }
}

/// The handler and the open connections, shared by every connection's channel handler.
final class FakeConnections: Sendable {
    let handler: FakeHTTPServer.Handler

    private struct State {
        var outage = false
        var open: [ObjectIdentifier: any Channel] = [:]
    }

    private let state = Mutex(State())

    init(handler: @escaping FakeHTTPServer.Handler) {
        self.handler = handler
    }

    var isInOutage: Bool { state.withLock { $0.outage } }

    func admit(_ channel: any Channel) {
        state.withLock { state in
            state.open[ObjectIdentifier(channel)] = channel
        }
    }

    func remove(_ channel: any Channel) {
        state.withLock { state in
            _ = state.open.removeValue(forKey: ObjectIdentifier(channel))
        }
    }

    func setOutage(_ outage: Bool) {
        let toClose = state.withLock { state -> [any Channel] in
            state.outage = outage
            return outage ? Array(state.open.values) : []
        }
        for channel in toClose { channel.close(promise: nil) }
    }

    func closeAll() {
        let toClose = state.withLock { state -> [any Channel] in
            Array(state.open.values)
        }
        for channel in toClose { channel.close(promise: nil) }
    }
}

/// One connection: gathers each request, runs the async handler, writes its answer on the
/// event loop. The pipelining handler in front keeps one request in flight per connection.
final class FakeHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connections: FakeConnections
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var isOpen = true

    init(connections: FakeConnections) {
        self.connections = connections
    }

    func channelActive(context: ChannelHandlerContext) {
        connections.admit(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isOpen = false
        connections.remove(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A client that resets its connection (it gave up on a slow answer) is routine here.
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            guard let head else { return }
            self.head = nil
            let request = Self.request(head: head, body: body)
            body = []
            guard !connections.isInOutage else {
                context.close(promise: nil)
                return
            }
            let keepAlive = head.isKeepAlive
            let version = head.version
            let handler = connections.handler
            let answered = context.eventLoop.makePromise(of: FakeResponse.self)
            answered.completeWithTask { await handler(request) }
            answered.futureResult.assumeIsolated().whenSuccess { response in
                self.write(response, version: version, keepAlive: keepAlive, context: context)
            }
        }
    }

    private static func request(head: HTTPRequestHead, body: [UInt8]) -> FakeRequest {
        let uri = head.uri
        let path: String
        let query: String?
        if let mark = uri.firstIndex(of: "?") {
            path = String(uri[..<mark])
            query = String(uri[uri.index(after: mark)...])
        } else {
            path = uri
            query = nil
        }
        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        return FakeRequest(method: head.method.rawValue, path: path, query: query, headers: headers, body: body)
    }

    private func write(_ response: FakeResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext) {
        guard isOpen else { return }
        guard !connections.isInOutage else {
            context.close(promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: response.body.utf8.count)
        buffer.writeString(response.body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let sent = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: sent)
        if !keepAlive {
            sent.futureResult.assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }
}

/// `text` as a JSON string literal, quotes included.
func jsonQuoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default:
            result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

/// `count` random characters from `alphabet`.
func randomCharacters(_ count: Int, from alphabet: String) -> String {
    let characters = Array(alphabet)
    return String((0..<count).map { _ in characters.randomElement()! })
}
