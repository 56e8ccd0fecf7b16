import AsyncHTTPClient
import NIOCore
import Synchronization

/// The HTTP client of a sender to a `SecretURL` (the Slack notifier, the dead man's switch):
/// made at the first request, so one built for a process that never sends holds no
/// connections; no retry of a refused connection (the caller's next tick is the retry); and
/// no redirects, which would carry the request somewhere the URL's owner did not choose.
final class SecretURLClient: Sendable {
    private let timeout: Duration
    private let made = Mutex<HTTPClient?>(nil)

    /// - Parameter timeout: the longest a request may take; connecting takes at most 5 s of it.
    init(timeout: Duration) {
        self.timeout = timeout
    }

    /// The client, made now if this is the first request.
    var client: HTTPClient {
        made.withLock { client in
            if let client { return client }
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout.connect = TimeAmount(min(timeout, .seconds(5)))
            configuration.redirectConfiguration = .disallow
            let new = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            client = new
            return new
        }
    }

    /// Closes the client if one was made; call once, after the last request.
    func shutdown() async throws {
        let client = made.withLock { client -> HTTPClient? in
            defer { client = nil }
            return client
        }
        try await client?.shutdown()
    }
}
