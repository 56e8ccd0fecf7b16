import AsyncHTTPClient
import Foundation
import Logging
import Outbound
import PostgresNIO
import Resilience

/// The chips table's part of a WhatsApp sender: the roster (cached list, providers from each
/// chip's credential variables in this process's environment, a breaker per chip).
enum ChipAssembly {
    static func roster(
        configuration: FilaConfiguration,
        client: PostgresClient,
        registry: CircuitBreakerRegistry,
        httpClient: HTTPClient,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger
    ) -> ChipRoster {
        let factory = ChipProviderFactory(httpClient: httpClient, environment: environment, timeout: configuration.providerTimeout)
        return ChipRoster(
            store: ChipStore(client: client, timeZone: configuration.timeZone.identifier),
            registry: registry,
            makeProvider: { try factory.provider(for: $0) },
            logger: logger
        )
    }
}
