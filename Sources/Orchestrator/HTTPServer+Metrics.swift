#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import Observability
import PostgresNIO
import Primitives

/// `GET /metrics` (Prometheus text) and `GET /metrics/history` (the snapshots in
/// `metrics_snapshots`, seed T03.2). Public, like the health endpoints: counts and states only.
struct MetricsAPI: Sendable {
    let metrics: PrometheusMetrics
    let client: PostgresClient
    let logger: Logger

    /// `?hours=` of `/metrics/history`: 1 to 168 (the snapshots' 7 days), 24 by default.
    static let hoursRange = 1...168

    func register(on router: Router<APIRequestContext>) {
        router.get("/metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: PrometheusMetrics.contentType],
                body: ResponseBody(byteBuffer: ByteBuffer(string: await metrics.exposition(logger: logger)))
            )
        }
        router.get("/metrics/history") { request, _ in
            let (name, hours) = try Self.historyQuery(request)
            let points = try await Self.database {
                // A database that does not answer is a 503 in seconds, not a hung request.
                try await withTimeLimit(.seconds(5), onTimeout: { DatabaseTimedOut() }) {
                    try await MetricsHistory.points(name: name, hours: hours, client: client, logger: logger)
                }
            }
            return MetricsHistory(name: name, hours: hours, points: points)
        }
    }

    /// `?name=` (required: a snapshot metric name, `[a-z_][a-z0-9_]*`, up to 100 characters)
    /// and `?hours=` (1-168, default 24).
    static func historyQuery(_ request: Request) throws(APIError) -> (String, Int) {
        guard let name = request.uri.queryParameters.get("name"), !name.isEmpty else {
            throw APIError(status: .badRequest, code: "missing_name", message: "name is required: a metric name from metrics_snapshots, e.g. fila_pendentes")
        }
        guard MetricsHistory.isValidName(name) else {
            throw APIError(status: .badRequest, code: "invalid_name", message: "name must be 1-100 of a-z 0-9 _ starting with a letter or _")
        }
        guard let text = request.uri.queryParameters.get("hours") else { return (name, 24) }
        guard let hours = Int(text), hoursRange.contains(hours) else {
            throw APIError(status: .badRequest, code: "invalid_hours", message: "hours must be a whole number from \(hoursRange.lowerBound) to \(hoursRange.upperBound)")
        }
        return (name, hours)
    }

    private static func database<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw APIError(status: .serviceUnavailable, code: "database_unavailable", message: "the database did not answer; try again")
        }
    }
}

private struct DatabaseTimedOut: Error {}

/// `GET /metrics/history`'s body: one snapshot metric's points, oldest first.
struct MetricsHistory: ResponseEncodable, Sendable, Equatable {
    struct Point: Codable, Sendable, Equatable {
        let time: Date
        let value: Double
        let labels: [String: String]
    }

    let name: String
    let hours: Int
    let points: [Point]

    static func isValidName(_ name: String) -> Bool {
        guard (1...100).contains(name.utf8.count), let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    static func points(name: String, hours: Int, client: PostgresClient, logger: Logger) async throws -> [Point] {
        let rows = try await client.query(
            """
            SELECT created_at, value::float8, labels::text FROM metrics_snapshots
             WHERE metric_name = \(name) AND created_at > now() - make_interval(hours => \(Int32(hours)))
             ORDER BY created_at, id
            """,
            logger: logger
        )
        var points: [Point] = []
        for try await (time, value, labels) in rows.decode((Date, Double, String).self) {
            points.append(Point(time: time, value: value, labels: Self.labels(labels)))
        }
        return points
    }

    /// A snapshot's labels as strings (a number or boolean written by hand shows as text).
    private static func labels(_ text: String) -> [String: String] {
        guard let object = try? JSONDecoder().decode([String: JSONValue].self, from: Data(text.utf8)) else { return [:] }
        return object.mapValues { value in
            switch value {
            case .string(let text): text
            case .integer(let number): String(number)
            case .number(let number): String(number)
            case .bool(let flag): String(flag)
            case .null: ""
            case .array, .object: String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
            }
        }
    }
}

/// Counts every request by route template (never the raw path: ids would explode the
/// series), method and status, and times it.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    static var requests: MetricDescriptor {
        MetricDescriptor(
            "wa_http_requests_total", .counter, labels: ["route", "method", "status"],
            help: "HTTP requests by route template (unmatched for unknown paths), method and status code."
        )
    }
    static var duration: MetricDescriptor {
        MetricDescriptor("wa_http_request_duration_seconds", .histogram, labels: ["route", "method"], help: "How long HTTP requests took to answer, by route template and method.")
    }
    static var descriptors: [MetricDescriptor] { [requests, duration] }

    private let counters: MetricFamily<Counter>
    private let durations: MetricFamily<Metrics.Timer>

    init(factory: any MetricsFactory) {
        counters = .counter(Self.requests, factory: factory)
        durations = .histogram(Self.duration, factory: factory)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let status: HTTPResponse.Status
        do {
            let response = try await next(request, context)
            status = response.status
            record(context, request, status, since: started)
            return response
        } catch let error as any HTTPResponseError {
            status = error.status
            record(context, request, status, since: started)
            throw error
        } catch {
            record(context, request, .internalServerError, since: started)
            throw error
        }
    }

    private func record(_ context: Context, _ request: Request, _ status: HTTPResponse.Status, since started: ContinuousClock.Instant) {
        // Hummingbird names an unmatched request's endpoint "NotFound"; templates start with "/".
        let route = context.endpointPath.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "unmatched"
        let method = request.method.rawValue
        counters(route, method, String(status.code)).increment()
        durations(route, method).record(duration: ContinuousClock.now - started)
    }
}

extension HTTPServer {
    /// The small server of `METRICS_PORT`: `/health`, `/metrics` and `/metrics/history`, so
    /// a worker or scheduler without the API can be scraped too.
    static func makeMetricsApplication(host: String, port: Int, metrics: MetricsAPI, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: makeRouter(metrics: metrics),
            configuration: .init(address: .hostname(host, port: port), serverName: "fila-metrics"),
            onServerRunning: { channel in
                logger.info("metrics endpoint listening on \(host):\(channel.localAddress?.port ?? port)")
            },
            logger: logger
        )
    }
}
