import HTTPTypes
import Hummingbird
import Logging
import Observability

extension HTTPField.Name {
    /// The correlation id a request brings and every response returns.
    static let correlationID = Self(Correlation.headerName)!
}

/// Gives every request a correlation id and returns it on every response, errors included.
///
/// The id is the request's `X-Correlation-ID` when it sends exactly one that follows
/// ``CorrelationID``'s rule; otherwise a new one. A missing, malformed or repeated header is
/// not refused: tracing must never fail a request (a health probe or a run asked by a
/// gateway whose ids are longer). The id the request ran with is always the one in the
/// response, so a caller whose header was replaced sees it, and the replacement is logged.
///
/// While the request is handled, the id is the task's current one (``Correlation``): the
/// request's logger carries it, rows the request creates store it, and calls it makes
/// pass it on.
struct CorrelationMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let id = Self.correlationID(of: request, logger: context.logger)
        var context = context
        context.logger[metadataKey: Correlation.metadataKey] = .string(id.value)
        var response: Response
        do {
            response = try await Correlation.withID(id) { try await next(request, context) }
        } catch let error as any HTTPResponseError {
            // Rendered here rather than by the server, so the error answer carries the id too.
            response = try error.response(from: request, context: context)
        }
        response.headers[.correlationID] = id.value
        return response
    }

    static func correlationID(of request: Request, logger: Logger) -> CorrelationID {
        let values = request.headers[values: .correlationID]
        if values.count == 1, let id = CorrelationID(validating: values[0]) { return id }
        let id = CorrelationID.generate()
        if !values.isEmpty {
            // Never the value itself: it failed the rule that makes it safe to log.
            logger.warning(
                "X-Correlation-ID replaced: send one, \(CorrelationID.rule)",
                metadata: [
                    Correlation.metadataKey: .string(id.value),
                    "http.correlation_id.count": .stringConvertible(values.count),
                    "http.correlation_id.bytes": .stringConvertible(values.first?.utf8.count ?? 0),
                ]
            )
        }
        return id
    }
}
