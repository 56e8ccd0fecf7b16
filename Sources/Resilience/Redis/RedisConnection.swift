import NIOCore
import NIOPosix

/// One TCP connection to Redis speaking RESP2.
///
/// Many tasks may `send` at once: commands are pipelined and replies matched to callers in
/// the order the commands were written. There is no per-command timeout here; a caller
/// that needs one races its own deadline, and cancelling it returns at once without
/// disturbing the replies of other callers.
///
/// ```swift
/// let redis = try await RedisConnection.connect(to: RedisURL("redis://127.0.0.1:6379"), connectTimeout: .seconds(2))
/// let count = try await redis.send(["INCRBY", "sent:evolution", "1"]).int64
/// await redis.close()
/// ```
public final class RedisConnection: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    deinit {
        // A connection dropped without `close()` must not leave its socket open.
        channel.close(promise: nil)
    }

    /// Connects, then sends AUTH and SELECT when the URL asks for them.
    ///
    /// Throws `RedisError(.connectionFailed)` when Redis cannot be reached within
    /// `connectTimeout` or refuses the credentials or database.
    public static func connect(
        to url: RedisURL,
        connectTimeout: Duration,
        on eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RedisConnection {
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(TimeAmount(connectTimeout))
            // ClientBootstrap's default too; stated because small pipelined commands
            // must not wait for Nagle's algorithm.
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                // Handlers are not Sendable: they are made here, on the channel's loop.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPDecoder()),
                        RedisCommandHandler(),
                    ])
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: url.host, port: url.port).get()
        } catch {
            let reason: String
            if let channelError = error as? ChannelError, case .connectTimeout = channelError {
                reason = "no answer within \(connectTimeout)"
            } else {
                reason = "\(error)"
            }
            throw RedisError(.connectionFailed, "cannot connect to Redis at \(url.address): \(reason)", underlying: error)
        }

        let connection = RedisConnection(channel: channel)
        do {
            if let password = url.password {
                if let username = url.username {
                    _ = try await connection.send(["AUTH", username, password])
                } else {
                    _ = try await connection.send(["AUTH", password])
                }
            }
            if url.database != 0 {
                _ = try await connection.send(["SELECT", String(url.database)])
            }
        } catch let error as RedisError where error.code == .serverError {
            await connection.close()
            // The server's message ("WRONGPASS …", "DB index is out of range") never
            // repeats the password.
            throw RedisError(.connectionFailed, "Redis at \(url.address) refused the connection: \(error.message)", underlying: error)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply. A RESP error reply throws RedisError(.serverError).
    /// Pipelining-safe: many concurrent callers may send at once; replies are matched in FIFO order.
    ///
    /// Throws `RedisError(.connectionClosed)` when the connection is or becomes closed, and
    /// `CancellationError` at once when the calling task is cancelled.
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try Task.checkCancellation()
        let channel = self.channel
        // `reply` stays in the handler's queue until its reply arrives, even when the
        // caller has gone; `answer` is what the caller waits on, so cancellation can
        // complete it early without shifting which reply belongs to whom.
        let reply = channel.eventLoop.makePromise(of: RESPValue.self)
        let answer = channel.eventLoop.makePromise(of: RESPValue.self)
        reply.futureResult.cascade(to: answer)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            reply.fail(
                (error as? RedisError) ?? RedisError(.connectionClosed, "the connection to Redis is closed", underlying: error)
            )
            // A write that failed leaves no reply to match: the queue would be off by one.
            channel.close(promise: nil)
        }
        channel.writeAndFlush(RedisRequest(arguments: arguments, reply: reply), promise: written)
        return try await withTaskCancellationHandler {
            try await answer.futureResult.get()
        } onCancel: {
            answer.fail(CancellationError())
        }
    }

    /// Whether the TCP connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Closes the connection; commands still waiting fail with `connectionClosed`.
    public func close() async {
        channel.close(promise: nil)
        try? await channel.closeFuture.get()
    }
}

/// A command on its way to the pipeline, with the promise its reply completes.
struct RedisRequest: Sendable {
    var arguments: [String]
    var reply: EventLoopPromise<RESPValue>
}

/// Turns the byte stream into whole RESP values.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue

    private var parser = RESPParser()

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try parser.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }
}

/// Writes commands and hands each reply to the oldest waiting command: Redis answers a
/// connection's commands strictly in order.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var waiting = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 16)
    /// Set once the connection can no longer carry commands; later writes fail with it.
    private var closedError: RedisError?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let closedError {
            request.reply.fail(closedError)
            promise?.fail(closedError)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPValue.writeCommand(request.arguments, into: &buffer)
        waiting.append(request.reply)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard let reply = waiting.popFirst() else {
            // A reply nobody asked for (a pub/sub push, or a stream out of step): nothing
            // later on this connection can be trusted to match.
            failAll(RedisError(.connectionClosed, "Redis sent a reply no command was waiting for; connection closed"))
            context.close(promise: nil)
            return
        }
        if case .error(let message) = value {
            reply.fail(RedisError(.serverError, message))
        } else {
            reply.succeed(value)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError(.connectionClosed, "the connection to Redis closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason = (error as? RedisError)?.message ?? "\(error)"
        failAll(RedisError(.connectionClosed, "the connection to Redis failed: \(reason)", underlying: error))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if closedError == nil { closedError = error }
        while let reply = waiting.popFirst() {
            reply.fail(error)
        }
    }
}
