import AsyncHTTPClient
import Logging
import NIOCore
import Synchronization

/// The outside half of "who watches the watcher" (`FILA_DEADMAN_URL`): after each healthy
/// evaluation round the scheduler GETs a URL of a dead man's switch service (healthchecks.io,
/// Cronitor and the like), which alerts by its own channels when the pings stop — when the
/// whole deployment, or its database, is gone and no `fila` process is left to say so.
///
/// A ping that fails is logged and retried at the next round; it never holds the round up
/// for longer than its timeout. The URL is a credential: only its host is ever logged.
///
/// ```swift
/// let deadman = DeadmanSwitch(url: url)
/// _ = await deadman.ping(logger: logger)
/// try await deadman.shutdown()
/// ```
public final class DeadmanSwitch: Sendable {
    public let url: SecretURL
    public let timeout: Duration
    private let httpClient = Mutex<HTTPClient?>(nil)
    /// Whether the last ping failed, so a lasting failure is logged once, not every round.
    private let failing = Mutex(false)

    public init(url: SecretURL, timeout: Duration = .seconds(10)) {
        self.url = url
        self.timeout = timeout
    }

    /// GETs the URL; true when it answered 2xx.
    public func ping(logger: Logger) async -> Bool {
        var request = HTTPClientRequest(url: url.value)
        request.method = .GET
        let problem: String
        do {
            let response = try await client().execute(request, timeout: TimeAmount(timeout))
            _ = try? await response.body.collect(upTo: 16 * 1024)
            if (200...299).contains(response.status.code) {
                if failing.withLock({ value in defer { value = false }; return value }) {
                    logger.notice("the dead man's switch answers again", metadata: ["deadman.url": .string(url.description)])
                }
                return true
            }
            problem = "HTTP \(response.status.code)"
        } catch {
            problem = url.redacting(String(describing: error))
        }
        if !failing.withLock({ value in defer { value = true }; return value }) {
            logger.error("cannot ping the dead man's switch (FILA_DEADMAN_URL); retrying at every evaluation", metadata: ["deadman.url": .string(url.description), "error": .string(problem)])
        }
        return false
    }

    /// Closes the HTTP client if one was made; call once, after the last ping.
    public func shutdown() async throws {
        let client = httpClient.withLock { client -> HTTPClient? in
            defer { client = nil }
            return client
        }
        try await client?.shutdown()
    }

    private func client() -> HTTPClient {
        httpClient.withLock { client in
            if let client { return client }
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout.connect = TimeAmount(min(timeout, .seconds(5)))
            let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            client = made
            return made
        }
    }
}
