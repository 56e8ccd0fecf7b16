import AsyncHTTPClient
import Logging
import NIOCore
import ServiceLifecycle

/// The HTTP client the providers share, owned as a service: shut down after the worker that
/// uses it has stopped.
///
/// Unlike AsyncHTTPClient's default, a connection that cannot be opened fails the call at
/// once instead of being retried in the background until the connect timeout: a gateway
/// that refuses connections must show up as failures the breaker counts within a call, not
/// as a stalled call many seconds later. Retrying is the queue's job (backoff) and the
/// breaker's (probes).
public final class ProviderHTTPClient: Service {
    public let client: HTTPClient

    /// - Parameter connectTimeout: how long opening one connection may take.
    public init(connectTimeout: Duration = .seconds(5)) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = TimeAmount(connectTimeout)
        // Providers' URLs carry no redirects we should follow with an API key attached.
        configuration.redirectConfiguration = .disallow
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func run() async throws {
        // Nothing to do until shutdown reaches this service (after the worker stopped).
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
