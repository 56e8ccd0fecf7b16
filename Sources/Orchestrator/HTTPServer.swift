#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging

/// The HTTP API of a `fila serve` process.
enum HTTPServer {
    static func makeApplication(configuration: FilaConfiguration, jobs: JobsAPI? = nil, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: makeRouter(jobs: jobs),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "fila"),
            logger: logger
        )
    }

    static func makeRouter(jobs: JobsAPI? = nil) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/health") { _, _ in
            try jsonResponse(HealthLiveness(status: "pass", version: FilaVersion.current), contentType: "application/health+json")
        }
        jobs?.register(on: router)
        return router
    }

    /// `{"error": {"code": "...", "message": "..."}}` with `status`.
    static func errorResponse(_ status: HTTPResponse.Status, code: String, message: String) throws -> Response {
        try jsonResponse(["error": ["code": code, "message": message]], status: status)
    }

    static func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok, contentType: String = "application/json") throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
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
