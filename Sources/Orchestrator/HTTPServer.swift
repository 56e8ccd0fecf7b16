#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The HTTP API of a `fila serve` process.
enum HTTPServer {
    static func makeApplication(configuration: FilaConfiguration, jobs: JobsAPI? = nil, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: makeRouter(jobs: jobs, maxRequestBodyBytes: configuration.httpMaxRequestBodyBytes),
            server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.httpIdleTimeout))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "fila"),
            logger: logger
        )
    }

    static func makeRouter(jobs: JobsAPI? = nil, maxRequestBodyBytes: Int = FilaConfiguration().httpMaxRequestBodyBytes) -> Router<BasicRequestContext> {
        let router = Router()
        // Before the routes: a router wraps each route in the middleware added so far.
        router.add(middleware: RequestBodyLimitMiddleware(maximumBytes: maxRequestBodyBytes))
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

/// An API error, rendered as the project's error body with its status.
struct APIError: HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    /// The machine-readable `error.code`.
    let code: String
    let message: String
    var headers: HTTPFields = [:]

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try HTTPServer.errorResponse(status, code: code, message: message)
        response.headers.append(contentsOf: headers)
        return response
    }

    var description: String { "\(status.code) \(code): \(message)" }
}

/// Refuses a request body over `maximumBytes` with 413 before any handler runs: at once
/// when `Content-Length` declares it (the body is not read), otherwise as soon as the
/// streamed body passes the limit. Handlers get the body already read. The answer asks the
/// client to close the connection, so it stops sending the rest.
struct RequestBodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maximumBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let tooLarge = APIError(
            status: .contentTooLarge, code: "body_too_large",
            message: "the request body is larger than \(maximumBytes) bytes", headers: [.connection: "close"]
        )
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > maximumBytes {
            throw tooLarge
        }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maximumBytes)
        } catch is NIOTooManyBytesError {
            throw tooLarge
        }
        return try await next(request, context)
    }
}

/// `GET /health`: liveness in the health+json shape. It checks nothing outside the process
/// on purpose: a Postgres or provider outage must not get the process restarted.
struct HealthLiveness: Codable, Sendable, Equatable {
    let status: String
    let version: String
}
