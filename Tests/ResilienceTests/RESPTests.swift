import FilaTestSupport
import NIOCore
import Testing

@testable import Resilience

/// Parses `text` as one RESP value with a fresh parser.
private func parse(_ text: String) throws -> RESPValue? {
    var buffer = ByteBuffer(string: text)
    var parser = RESPParser()
    return try parser.parse(&buffer)
}

private func bulk(_ text: String) -> RESPValue {
    .bulkString(Array(text.utf8))
}

@Suite("RESPParser reads RESP2 replies, whole or in pieces")
struct RESPParserTests {
    @Test func readsEachType() throws {
        #expect(try parse("+OK\r\n") == .simpleString("OK"))
        #expect(try parse("-ERR unknown command 'NOPE'\r\n") == .error("ERR unknown command 'NOPE'"))
        #expect(try parse(":-42\r\n") == .integer(-42))
        #expect(try parse("$5\r\nhello\r\n") == bulk("hello"))
        #expect(try parse("$0\r\n\r\n") == .bulkString([]))
        #expect(try parse("*0\r\n") == .array([]))
    }

    @Test func readsNulls() throws {
        #expect(try parse("$-1\r\n") == .bulkString(nil))
        #expect(try parse("*-1\r\n") == .array(nil))
        #expect(try parse("$-1\r\n")?.isNull == true)
        #expect(try parse("*-1\r\n")?.isNull == true)
    }

    @Test func keepsCRLFInsideABulkString() throws {
        #expect(try parse("$4\r\na\r\nb\r\n") == .bulkString([UInt8(ascii: "a"), 13, 10, UInt8(ascii: "b")]))
    }

    @Test func readsNestedArrays() throws {
        let text = "*3\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n*1\r\n*-1\r\n"
        #expect(try parse(text) == .array([.array([.integer(1), bulk("a")]), .array([]), .array([.array(nil)])]))
    }

    @Test func consumesOneValueAndLeavesTheNext() throws {
        var buffer = ByteBuffer(string: "+OK\r\n:7\r\n")
        var parser = RESPParser()
        let first = try parser.parse(&buffer)
        #expect(first == .simpleString("OK"))
        #expect(buffer.readableBytes == 4)
        let second = try parser.parse(&buffer)
        #expect(second == .integer(7))
        #expect(buffer.readableBytes == 0)
        let third = try parser.parse(&buffer)
        #expect(third == nil)
    }

    @Test func everyIncompletePrefixReturnsNilAndConsumesNothing() throws {
        let text = "*2\r\n$5\r\nhello\r\n*2\r\n:10\r\n+OK\r\n"
        let bytes = Array(text.utf8)
        var parser = RESPParser()
        for length in 0..<bytes.count {
            var buffer = ByteBuffer(bytes: bytes[0..<length])
            let value = try parser.parse(&buffer)
            #expect(value == nil, "prefix of \(length) bytes")
            #expect(buffer.readerIndex == 0, "prefix of \(length) bytes")
            #expect(buffer.readableBytes == length)
        }
    }

    @Test func aValueSplitAcrossTwoReadsArrivesWhole() throws {
        var parser = RESPParser()
        var buffer = ByteBuffer(string: "*2\r\n$5\r\nhel")
        let partial = try parser.parse(&buffer)
        #expect(partial == nil)
        #expect(buffer.readerIndex == 0)
        buffer.writeString("lo\r\n:3\r\n")
        let whole = try parser.parse(&buffer)
        #expect(whole == .array([bulk("hello"), .integer(3)]))
        #expect(buffer.readableBytes == 0)
    }

    @Test(arguments: [
        "?what\r\n",  // unknown type byte
        ":12a\r\n",  // integer with a letter
        "$abc\r\n",  // bulk length not a number
        "$-2\r\n",  // negative bulk length other than -1
        "*-5\r\n",  // negative array length other than -1
        "$3\r\nabcd\r\n",  // bulk longer than announced
        "+OK\rX",  // CR without LF
        "*1\r\n!\r\n",  // a bad element inside an array
    ])
    func rejectsMalformedInput(_ text: String) throws {
        do {
            let value = try parse(text)
            Issue.record("parsed \(text.debugDescription) as \(String(describing: value))")
        } catch let error as RedisError {
            #expect(error.code == .protocolError)
        }
    }

    @Test func refusesAnEndlessLine() throws {
        do {
            let value = try parse("+" + String(repeating: "a", count: 70_000))
            Issue.record("parsed an endless line as \(String(describing: value))")
        } catch let error as RedisError {
            #expect(error.code == .protocolError)
        }
    }

    @Test func convertsNumbersAndText() {
        #expect(RESPValue.integer(5).int64 == 5)
        #expect(bulk("42").int64 == 42)
        #expect(RESPValue.simpleString("-3").int64 == -3)
        #expect(bulk("4.5").int64 == nil)
        #expect(RESPValue.bulkString(nil).int64 == nil)
        #expect(bulk("olá").string == "olá")
        #expect(RESPValue.simpleString("OK").string == "OK")
        #expect(RESPValue.error("ERR x").string == nil)
        #expect(RESPValue.bulkString(nil).string == nil)
    }
}

@Suite("Commands are written as arrays of bulk strings")
struct RESPCommandEncodingTests {
    @Test func writesAnArrayOfBulkStrings() {
        var buffer = ByteBuffer()
        RESPValue.writeCommand(["SET", "chave", "olá", ""], into: &buffer)
        let written = buffer.readString(length: buffer.readableBytes)
        // "olá" is 4 bytes in UTF-8: bulk lengths count bytes.
        #expect(written == "*4\r\n$3\r\nSET\r\n$5\r\nchave\r\n$4\r\nolá\r\n$0\r\n\r\n")
    }

    @Test func anEncodedCommandParsesBack() throws {
        var buffer = ByteBuffer()
        RESPValue.writeCommand(["INCRBY", "fila:contador", "1"], into: &buffer)
        var parser = RESPParser()
        let parsed = try parser.parse(&buffer)
        #expect(parsed == .array([bulk("INCRBY"), bulk("fila:contador"), bulk("1")]))
    }
}

@Suite("RedisURL parses redis:// URLs and never shows the password")
struct RedisURLTests {
    @Test func appliesDefaults() throws {
        let url = try RedisURL("redis://localhost")
        #expect(url.host == "localhost")
        #expect(url.port == 6379)
        #expect(url.database == 0)
        #expect(url.username == nil)
        #expect(url.password == nil)
        #expect(url.description == "redis://localhost:6379/0")
    }

    @Test func parsesPasswordPortAndDatabase() throws {
        let url = try RedisURL("redis://:s3cret@cache.internal:6380/2")
        #expect(url.host == "cache.internal")
        #expect(url.port == 6380)
        #expect(url.database == 2)
        #expect(url.username == nil)
        #expect(url.password == "s3cret")
        #expect(url.description == "redis://:***@cache.internal:6380/2")
        #expect(!"\(url)".contains("s3cret"))
    }

    @Test func parsesAUserAndAPercentEncodedPassword() throws {
        let url = try RedisURL("redis://fila:p%40ss%3Aword@10.0.0.5/1")
        #expect(url.username == "fila")
        #expect(url.password == "p@ss:word")
        #expect(url.port == 6379)
        #expect(url.description == "redis://fila:***@10.0.0.5:6379/1")
    }

    @Test func takesAnUnencodedAtSignInThePassword() throws {
        let url = try RedisURL("redis://:pa@ss@redis:6379")
        #expect(url.password == "pa@ss")
        #expect(url.host == "redis")
    }

    @Test func parsesAnIPv6Host() throws {
        let url = try RedisURL("redis://[::1]:7000")
        #expect(url.host == "::1")
        #expect(url.port == 7000)
        #expect(url.description == "redis://[::1]:7000/0")
    }

    @Test(arguments: [
        ("", "is empty"),
        (" redis://localhost", "leading or trailing spaces"),
        ("localhost:6379", "is not a URL"),
        ("http://localhost", "has scheme 'http'"),
        ("rediss://localhost", "TLS"),
        ("redis://", "has no host"),
        ("redis://localhost:0", "has port '0'"),
        ("redis://localhost:abc", "has port 'abc'"),
        ("redis://localhost:70000", "has port '70000'"),
        ("redis://localhost/abc", "has database 'abc'"),
        ("redis://localhost/-1", "has database '-1'"),
        ("redis://fila@localhost", "without a password"),
        ("redis://:@localhost", "empty password"),
        ("redis://localhost?db=1", "query"),
        ("redis://::1:6379", "IPv6"),
        ("redis://:p%4@localhost", "malformed %-escape"),
    ])
    func rejects(_ text: String, _ fragment: String) {
        switch Result(catching: { () throws(RedisError) in try RedisURL(text) }) {
        case .success(let url):
            Issue.record("accepted \(text.debugDescription) as \(url)")
        case .failure(let error):
            #expect(error.code == .invalidURL)
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func errorsNeverQuoteThePassword() {
        switch Result(catching: { () throws(RedisError) in try RedisURL("redis://:hunter2@localhost:99999") }) {
        case .success(let url):
            Issue.record("accepted \(url)")
        case .failure(let error):
            #expect(error.code == .invalidURL)
            #expect(!error.description.contains("hunter2"))
        }
    }
}

@Suite("RedisConnection against a redis-server of the test's own", .timeLimit(.minutes(2)))
struct RedisConnectionTests {
    private static func connect(_ redis: TestRedis, path: String = "") async throws -> RedisConnection {
        try await RedisConnection.connect(to: RedisURL(redis.url + path), connectTimeout: .seconds(20))
    }

    @Test func setThenGet() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            #expect(try await connection.send(["SET", "fila:chave", "valor"]) == .simpleString("OK"))
            #expect(try await connection.send(["GET", "fila:chave"]) == bulk("valor"))
            #expect(try await connection.send(["GET", "fila:chave"]).string == "valor")
            #expect(try await connection.send(["GET", "fila:ausente"]) == .bulkString(nil))
            await connection.close()
        }
    }

    @Test func incrementsByAnAmount() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            #expect(try await connection.send(["INCRBY", "fila:contador", "5"]) == .integer(5))
            #expect(try await connection.send(["INCRBY", "fila:contador", "-2"]) == .integer(3))
            #expect(try await connection.send(["GET", "fila:contador"]).int64 == 3)
            await connection.close()
        }
    }

    @Test func anErrorReplyThrowsServerErrorAndTheConnectionGoesOn() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            do {
                let reply = try await connection.send(["NOPE", "x"])
                Issue.record("an unknown command answered \(reply)")
            } catch let error as RedisError {
                #expect(error.code == .serverError)
                #expect(error.message.hasPrefix("ERR"), "\(error.message)")
            }
            #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
            await connection.close()
        }
    }

    @Test func selectsTheDatabaseInTheURL() async throws {
        try await TestRedis.with { redis throws in
            let three = try await Self.connect(redis, path: "/3")
            let zero = try await Self.connect(redis)
            #expect(try await three.send(["SET", "fila:onde", "tres"]) == .simpleString("OK"))
            #expect(try await zero.send(["GET", "fila:onde"]) == .bulkString(nil))
            #expect(try await three.send(["GET", "fila:onde"]) == bulk("tres"))
            await three.close()
            await zero.close()
        }
    }

    @Test func aRefusedPasswordFailsTheConnect() async throws {
        try await TestRedis.with { redis throws in
            do {
                let connection = try await RedisConnection.connect(
                    to: RedisURL("redis://:senha-errada@127.0.0.1:\(redis.port)"),
                    connectTimeout: .seconds(2)
                )
                Issue.record("connected with a password the server does not have")
                await connection.close()
            } catch let error as RedisError {
                #expect(error.code == .connectionFailed)
                #expect(!error.description.contains("senha-errada"))
            }
        }
    }

    /// The tests' redis-server is not open to other local accounts: without the password
    /// in `TestRedis.url`, nothing is answered.
    @Test func theTestServerRefusesAClientWithoutItsPassword() async throws {
        try await TestRedis.with { redis throws in
            #expect(redis.url.hasPrefix("redis://:\(redis.password)@127.0.0.1:"))
            let stranger = try await RedisConnection.connect(to: RedisURL("redis://127.0.0.1:\(redis.port)"), connectTimeout: .seconds(20))
            do {
                let reply = try await stranger.send(["PING"])
                Issue.record("a client without the password was answered \(reply)")
            } catch let error as RedisError {
                #expect(error.message.hasPrefix("NOAUTH"), "\(error.message)")
            }
            await stranger.close()
            let connection = try await Self.connect(redis)
            #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
            await connection.close()
        }
    }

    @Test func concurrentCallersEachGetTheirOwnReply() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            let counts = try await withThrowingTaskGroup(of: Int64?.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await connection.send(["INCRBY", "fila:concorrente", "1"]).int64 }
                }
                var counts: [Int64] = []
                for try await count in group { counts.append(count ?? -1) }
                return counts
            }
            #expect(counts.sorted() == Array(Int64(1)...Int64(50)))

            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<50 {
                    group.addTask {
                        let reply = try await connection.send(["ECHO", "resposta-\(index)"])
                        #expect(reply.string == "resposta-\(index)")
                    }
                }
                try await group.waitForAll()
            }
            await connection.close()
        }
    }

    @Test func aCancelledCallerReturnsWithoutItsReplyAndLaterRepliesStillMatch() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            // BLPOP on an empty list with no timeout: its reply comes only once the list
            // gets an element, so the cancelled caller can only return without it.
            let blocked = Task { try await connection.send(["BLPOP", "fila:vazia", "0"]) }
            try await Task.sleep(for: .milliseconds(50))
            blocked.cancel()
            switch await blocked.result {
            case .success(let reply): Issue.record("a cancelled call returned \(reply)")
            case .failure(let error): #expect(error is CancellationError)
            }
            // Release the BLPOP from another connection: its reply arrives first on this
            // one and must go to nobody; the next command gets its own reply.
            let other = try await Self.connect(redis)
            #expect(try await other.send(["RPUSH", "fila:vazia", "x"]) == .integer(1))
            #expect(try await connection.send(["ECHO", "depois"]) == bulk("depois"))
            await other.close()
            await connection.close()
        }
    }

    @Test func sendingAfterCloseFailsAtOnce() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            await connection.close()
            #expect(!connection.isActive)
            do {
                let reply = try await connection.send(["PING"])
                Issue.record("a closed connection answered \(reply)")
            } catch let error as RedisError {
                #expect(error.code == .connectionClosed)
            }
        }
    }

    @Test func aStoppedServerFailsSendsAndConnectsPromptly() async throws {
        try await TestRedis.with { redis throws in
            let connection = try await Self.connect(redis)
            #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
            #expect(connection.isActive)

            await redis.stop()
            do {
                let reply = try await connection.send(["PING"])
                Issue.record("a stopped server answered \(reply)")
            } catch let error as RedisError {
                #expect(error.code == .connectionClosed)
            }

            do {
                let other = try await Self.connect(redis)
                Issue.record("connected to a stopped server")
                await other.close()
            } catch let error as RedisError {
                #expect(error.code == .connectionFailed)
            }
            await connection.close()

            // And it comes back on the same port.
            try await redis.start()
            let again = try await Self.connect(redis)
            #expect(try await again.send(["PING"]) == .simpleString("PONG"))
            await again.close()
        }
    }
}
