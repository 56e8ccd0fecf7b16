import AsyncHTTPClient
import Foundation
import Jobs
import Logging
import Observability
import Outbound

/// The jobs that need the chips' providers, so are built here rather than in `Jobs`.
enum ChipJobs {
    /// T03.7: every chip's connection state, every minute, alert `whatsapp_desconectado`.
    static func connectionMonitor(
        configuration: FilaConfiguration,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> JobDefinition {
        JobDefinition(
            name: "verificar-whatsapp",
            schedule: .every(seconds: 60),
            description: "Asks every chip's provider (Evolution connectionState, Z-API status) whether its WhatsApp session is connected, records it in chips.connection_state, and alerts whatsapp_desconectado per chip disconnected for alert.whatsapp_desconectado.seconds (300) (T03.7)",
            sla: .seconds(30)
        ) { context in
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                let monitor = ChipConnectionMonitor(
                    store: ChipStore(client: context.client, timeZone: configuration.timeZone.identifier),
                    check: ChipConnectionCheck(httpClient: http, environment: environment, timeout: min(.seconds(10), configuration.providerTimeout)),
                    alerts: AlertStore(client: context.client)
                )
                let result = try await monitor.run(logger: context.logger)
                try await http.shutdown()
                return result
            } catch {
                try? await http.shutdown()
                throw error
            }
        }
    }
}
