import AsyncHTTPClient
import Database
import FilaTestSupport
import Logging
import Outbound
import Testing

/// A gateway that refuses connections must fail calls as network errors (counted by the
/// breaker), not stall them into timeouts (which are not counted).
@Suite struct ProviderHTTPClientTests {
    /// A port nothing listens on: a fake started and shut down.
    func closedPortURL() async throws -> String {
        let fake = try await FakeEvolution.start()
        let url = fake.baseURL
        await fake.shutdown()
        return url
    }

    static func failure(_ provider: EvolutionProvider) async -> ProviderError? {
        do {
            _ = try await provider.sendText(to: "5511999990000", text: "oi", logger: Logger(label: "test"))
            Issue.record("a refused connection succeeded")
            return nil
        } catch let error as ProviderError {
            return error
        } catch {
            Issue.record("expected a ProviderError, got \(String(reflecting: error))")
            return nil
        }
    }

    /// The call fails as soon as the connection is refused. AsyncHTTPClient's default would
    /// keep trying to connect for the whole connect timeout (30 s here) on every message,
    /// while the breaker waits for its failures.
    @Test func aRefusedConnectionFailsAtOnceAsANetworkError() async throws {
        let url = try await closedPortURL()
        let http = ProviderHTTPClient(connectTimeout: .seconds(30))
        let provider = EvolutionProvider(configuration: .init(baseURL: url, apiKey: "k", instance: "i", timeout: .seconds(60)), httpClient: http.client)
        let error = try await withTimeLimit(.seconds(10), onTimeout: { TestSetupError("the call kept trying to connect instead of failing at once") }) {
            await Self.failure(provider)
        }
        #expect(error?.kind == .network, "\(String(describing: error))")
        #expect(error?.reasonCode == "evolution:network")
        try await http.client.shutdown()
    }
}
