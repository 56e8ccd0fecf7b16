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
///
/// A route handler returns what it answers (a `ResponseEncodable` value, or a
/// ``JSONResponse`` for another status or content type) and throws an ``APIError`` for
/// anything else; the middleware below turns every other failure into the same error body.
enum HTTPServer {
    static func makeApplication(
        configuration: FilaConfiguration, jobs: JobsAPI? = nil, health: HealthAPI? = nil, metrics: MetricsAPI? = nil,
        guardrails: GuardrailsAPI? = nil, enqueue: EnqueueAPI? = nil, dashboard: DashboardAPI? = nil, logger: Logger
    ) -> some ApplicationProtocol {
        Application(
            router: makeRouter(
                jobs: jobs, health: health, metrics: metrics, guardrails: guardrails, enqueue: enqueue, dashboard: dashboard,
                maxRequestBodyBytes: configuration.httpMaxRequestBodyBytes
            ),
            server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.httpIdleTimeout))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "fila"),
            logger: logger
        )
    }

    static func makeRouter(
        jobs: JobsAPI? = nil, health: HealthAPI? = nil, metrics: MetricsAPI? = nil, guardrails: GuardrailsAPI? = nil,
        enqueue: EnqueueAPI? = nil, dashboard: DashboardAPI? = nil, maxRequestBodyBytes: Int = FilaConfiguration().httpMaxRequestBodyBytes
    ) -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        if let metrics { router.add(middleware: HTTPMetricsMiddleware(factory: metrics.metrics.factory)) }
        // Before the routes: a router wraps each route, and its not-found answer, in the
        // middleware added so far. The correlation id is outermost, so every answer carries
        // it; the error body next, so it sees every failure.
        router.add(middleware: CorrelationMiddleware())
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: RequestBodyLimitMiddleware(maximumBytes: maxRequestBodyBytes))
        router.get("/health") { _, _ in
            JSONResponse(HealthLiveness(status: "pass", version: FilaVersion.current), contentType: "application/health+json")
        }
        health?.register(on: router)
        metrics?.register(on: router)
        jobs?.register(on: router)
        guardrails?.register(on: router)
        enqueue?.register(on: router)
        dashboard?.register(on: router)
        return router
    }
}

/// The context of every request to the API: Hummingbird's own, with the API's one JSON
/// encoder.
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    var responseEncoder: APIResponseEncoder { APIResponseEncoder() }
}

/// Writes every JSON body the API sends: sorted keys and unescaped slashes, so bodies are
/// stable and diffable, and ISO 8601 dates, as `application/json`.
struct APIResponseEncoder: ResponseEncoder {
    /// Shared: configuring an encoder per response would repeat these choices everywhere.
    private static let json: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    func encode(_ value: some Encodable, from request: Request, context: some RequestContext) throws -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: try Self.json.encode(value)))
        )
    }
}

/// `value` as the request's encoder writes it, with a status or content type other than
/// 200 `application/json` (health answers are `application/health+json`).
struct JSONResponse<Value: Encodable & Sendable>: ResponseGenerator {
    let value: Value
    var status: HTTPResponse.Status
    var contentType: String?

    init(_ value: Value, status: HTTPResponse.Status = .ok, contentType: String? = nil) {
        self.value = value
        self.status = status
        self.contentType = contentType
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try context.responseEncoder.encode(value, from: request, context: context)
        response.status = status
        if let contentType { response.headers[.contentType] = contentType }
        return response
    }
}

/// An API error, rendered as the project's error body, `{"error": {"code", "message"}}`,
/// with its status: the one shape every failure reaches a client in.
struct APIError: HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    /// The machine-readable `error.code`.
    let code: String
    let message: String
    var headers: HTTPFields = [:]
    /// For a batch refused as a whole: each item at fault, by position (from 1), and why.
    var rejected: [Rejection]?

    struct Rejection: Encodable, Sendable, Equatable {
        let posicao: Int
        let reason: String
    }

    private struct Body: Encodable, Sendable {
        struct Detail: Encodable, Sendable {
            let code: String
            let message: String
            let rejected: [Rejection]?
        }

        let error: Detail
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try JSONResponse(Body(error: .init(code: code, message: message, rejected: rejected)), status: status)
            .response(from: request, context: context)
        response.headers.append(contentsOf: headers)
        return response
    }

    var description: String { "\(status.code) \(code): \(message)" }
}

/// Turns every failure that is not already an ``APIError`` into one: Hummingbird's own
/// errors (an unknown route is a 404) keep their status, and anything else is logged and
/// answered 500 without its detail, which may hold what a client must not see.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            throw APIError(status: error.status, code: Self.code(for: error.status), message: error.body ?? error.status.reasonPhrase.lowercased(), headers: error.headers)
        } catch let error as any HTTPResponseError {
            throw APIError(status: error.status, code: Self.code(for: error.status), message: error.status.reasonPhrase.lowercased())
        } catch {
            context.logger.error("HTTP request failed", metadata: ["error": .string(String(reflecting: error))])
            throw APIError(status: .internalServerError, code: "internal_error", message: "the request failed; the server's log says why")
        }
    }

    /// `error.code` for a status nothing more specific was given for: its reason phrase in
    /// snake case (`not_found`, `method_not_allowed`).
    static func code(for status: HTTPResponse.Status) -> String {
        let words = status.reasonPhrase.lowercased().split { !$0.isLetter && !$0.isNumber }
        return words.isEmpty ? "http_\(status.code)" : words.joined(separator: "_")
    }
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
