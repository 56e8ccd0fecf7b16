#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging

/// The HTTP API of a `fila serve` process.
enum HTTPServer {
    static func makeApplication(configuration: FilaConfiguration, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "fila"),
            logger: logger
        )
    }

    static func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/health") { _, _ in
            try jsonResponse(HealthLiveness(status: "pass", version: FilaVersion.current), contentType: "application/health+json")
        }
        return router
    }

    static func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok, contentType: String = "application/json") throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        return Response(
            status: status,
            headers: [.contentType: contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}

/// `GET /health`: liveness in the health+json shape. It checks nothing outside the process
/// on purpose: a Postgres or provider outage must not get the process restarted.
struct HealthLiveness: Codable, Sendable, Equatable {
    let status: String
    let version: String
}
