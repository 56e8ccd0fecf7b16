#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import HTTPTypes
import Hummingbird
import Jobs
import Logging
import NIOCore
import Observability
import PostgresNIO
import Primitives
import Queue
import Resilience

/// The health endpoints (seed T01.4, T01.6, T02.1, T02.5, T03.1, T03.4). Public, no token:
/// every body holds states and counts only, never an error's text, a URL or a setting.
///
/// Each endpoint runs its checks at once, each under a time limit of at most 1.5 s, so a
/// hung dependency is reported `fail` and the answer still comes within 2 s.
struct HealthAPI: Sendable {
    let client: PostgresClient
    /// Checked by readiness and scored only when the rate limiter is set to use it.
    let redisURL: RedisURL?
    let thresholds: QueueHealth.Thresholds
    /// How long `SELECT 1` may take before Postgres counts as unreachable (T03.1).
    let postgresTimeLimit: Duration
    /// How long any other check may take; nil keeps each check's own (1.5 s).
    let checkTimeLimit: Duration?
    let logger: Logger

    init(
        client: PostgresClient,
        redisURL: RedisURL? = nil,
        thresholds: QueueHealth.Thresholds = .init(),
        postgresTimeLimit: Duration = .seconds(1),
        checkTimeLimit: Duration? = nil,
        logger: Logger
    ) {
        self.client = client
        self.redisURL = redisURL
        self.thresholds = thresholds
        self.postgresTimeLimit = postgresTimeLimit
        self.checkTimeLimit = checkTimeLimit
        self.logger = logger
    }

    func register(on router: Router<APIRequestContext>) {
        router.get("/livez") { request, _ in
            // Touches nothing: a dependency's outage must not get the process restarted.
            Self.text(HealthReport(checks: [:]).kubernetesText(endpoint: "livez", verbose: request.isVerbose, passingName: "ping"), status: .ok)
        }
        router.get("/health/ready") { _, _ in
            Self.health(await HealthRunner.run(readiness, logger: logger))
        }
        router.get("/readyz") { request, _ in
            // The Kubernetes convention: 500 on failure, text/plain; `?exclude=NAME` (repeatable)
            // skips a check, `?verbose` lists them.
            let exclude = request.uri.queryParameters.getAll("exclude")
            let names = Set(readiness.map(\.component))
            let report = await HealthRunner.run(readiness.filter { !exclude.contains($0.component) }, logger: logger)
            let text = report.kubernetesText(
                endpoint: "readyz", verbose: request.isVerbose,
                excluded: exclude.filter(names.contains), unmatched: exclude.filter { !names.contains($0) }
            )
            return Self.text(text, status: report.status == .fail ? .internalServerError : .ok)
        }
        router.get("/readyz/:check") { request, context in
            // One check by name, as Kubernetes serves /readyz/etcd.
            let name = context.parameters.get("check") ?? ""
            let checks = readiness.filter { $0.component == name }
            guard !checks.isEmpty else {
                return Self.text("no readiness check named \"\(name.prefix(100))\"\n", status: .notFound)
            }
            let report = await HealthRunner.run(checks, logger: logger)
            return Self.text(report.kubernetesText(endpoint: "readyz", verbose: request.isVerbose), status: report.status == .fail ? .internalServerError : .ok)
        }
        router.get("/health/fila") { _, _ in
            let report = await HealthRunner.run(filaChecks, logger: logger)
            // The seed's six fields (T01.4) also at the top, as obter_metricas_fila returns them.
            let fields = report.checks[QueueHealth.backlogKey]?.first?.observation.details.filter { QueueHealth.seedFields.contains($0.key) } ?? [:]
            return Self.health(HealthReport(checks: report.checks, extra: fields))
        }
        router.get("/health/worker") { _, _ in
            Self.health(await HealthRunner.run(workerChecks, logger: logger))
        }
        router.get("/health/circuits") { _, _ in
            Self.health(await HealthRunner.run(circuitChecks, logger: logger))
        }
        router.get("/health/circuits/history") { request, _ in
            let (circuit, hours) = try Self.historyQuery(request)
            let records = try await Self.database { try await CircuitReport.transitions(circuit: circuit, hours: hours, client: client, logger: logger) }
            return CircuitHistory(circuit: circuit, hours: hours, transitions: records.map(TransitionBody.init))
        }
        router.get("/circuits/dashboard") { _, _ in
            try await dashboard()
        }
        router.get("/health/score") { _, _ in
            let report = await HealthRunner.run(allChecks, logger: logger)
            var body = HealthScores(report: report, redisConfigured: redisURL != nil).body
            body.chips = await chipScores()
            return body
        }
        registerChips(on: router)
        router.get("/health/deep") { _, _ in
            let report = await HealthRunner.run(allChecks + internalsChecks + limited([AlertDeliveryHealth.delivery(client: client, logger: logger)]), logger: logger)
            let scores = HealthScores(report: report, redisConfigured: redisURL != nil)
            return Self.health(HealthReport(checks: report.checks, extra: [
                "overall_score": .integer(scores.overall.value),
                "health_status": .string(scores.overall.band.rawValue),
                "version": .string(FilaVersion.current),
            ]))
        }
    }

    // The checks, by endpoint.

    var postgres: HealthCheck {
        HealthCheck(component: "postgres", measurement: "responseTime", componentType: .datastore, timeLimit: postgresTimeLimit) { [client, logger, postgresTimeLimit] in
            let elapsed = try await PostgresProbe.ping(client: client, logger: logger)
            // Slower than half its limit still answers, but the next one may not.
            let slow = elapsed > postgresTimeLimit / 2
            return HealthObservation(
                status: slow ? .warn : .pass, observedValue: .integer(Int(elapsed.seconds * 1000)), observedUnit: "ms",
                output: slow ? "SELECT 1 took more than half its time limit" : nil
            )
        }
    }

    var readiness: [HealthCheck] {
        [postgres] + limited(redisURL.map { [RedisHealth.ping(url: $0)] } ?? [])
    }

    var filaChecks: [HealthCheck] {
        limited([QueueHealth.backlog(queue: MessageQueue(client: client), thresholds: thresholds, logger: logger)])
    }

    var workerChecks: [HealthCheck] {
        limited([
            QueueHealth.liveWorkers(client: client, logger: logger), QueueHealth.sendingPause(client: client, logger: logger),
            QueueHealth.processes(client: client, logger: logger),
        ])
    }

    var circuitChecks: [HealthCheck] {
        limited([CircuitHealth.states(client: client, logger: logger)])
    }

    var allChecks: [HealthCheck] {
        readiness + workerChecks + filaChecks + circuitChecks + limited([
            SchedulerHealth.liveSchedulers(client: client, logger: logger),
            SchedulerHealth.lateJobs(client: client, logger: logger),
        ])
    }

    private func limited(_ checks: [HealthCheck]) -> [HealthCheck] {
        guard let checkTimeLimit else { return checks }
        return checks.map { $0.limited(to: checkTimeLimit) }
    }

    /// Postgres internals (design rule 6): `warn` early enough to act, `fail` when the queue
    /// is about to suffer (NOTIFY refusing, vacuum held back for an hour).
    var internalsChecks: [HealthCheck] {
        let read: @Sendable () async throws -> PostgresProbe.Internals = { [client, logger] in
            try await PostgresProbe.internals(client: client, logger: logger)
        }
        return limited([
            HealthCheck(component: "postgres", measurement: "deadTuples", componentType: .datastore) {
                let internals = try await read()
                // Autovacuum keeps dead tuples near 20% of the live ones by default; well past
                // that, vacuum is falling behind or held back.
                let bloated = internals.deadTuples > max(10_000, internals.liveTuples)
                return HealthObservation(
                    status: bloated ? .warn : .pass, componentID: "fila_mensagens",
                    observedValue: .integer(internals.deadTuples), observedUnit: "tuples",
                    output: bloated ? "fila_mensagens has more dead tuples than live ones: vacuum is behind" : nil,
                    details: ["live_tuples": .integer(internals.liveTuples)]
                )
            },
            HealthCheck(component: "postgres", measurement: "oldestTransaction", componentType: .datastore) {
                let seconds = try await read().oldestTransactionSeconds
                let status: HealthStatus = seconds > 3600 ? .fail : seconds > 300 ? .warn : .pass
                return HealthObservation(
                    status: status, observedValue: .integer(Int(seconds)), observedUnit: "s",
                    output: status == .pass ? nil : "a transaction has been open for \(Int(seconds)) s, holding back vacuum"
                )
            },
            HealthCheck(component: "postgres", measurement: "notificationQueue", componentType: .datastore) {
                let usage = try await read().notificationQueueUsage
                let status: HealthStatus = usage >= 0.9 ? .fail : usage >= 0.5 ? .warn : .pass
                return HealthObservation(
                    status: status, observedValue: .number(usage), observedUnit: "ratio",
                    output: status == .pass ? nil : "the NOTIFY queue is \(Int(usage * 100))% full: a listener is not reading"
                )
            },
        ])
    }

    /// The seed's dashboard (T02.5): the current state of each circuit, its last 24 hours of
    /// transitions, and the overall health score.
    func dashboard() async throws -> CircuitDashboard {
        async let report = HealthRunner.run(allChecks, logger: logger)
        let (states, transitions) = try await Self.database {
            (try await CircuitReport.currentStates(client: client, logger: logger),
             try await CircuitReport.transitions(hours: 24, client: client, logger: logger))
        }
        var current: [String: CircuitDashboard.Current] = [:]
        var history: [String: [TransitionBody]] = [:]
        for status in states {
            current[status.circuit] = .init(status)
            history[status.circuit] = []
        }
        for record in transitions {
            history[record.circuit, default: []].append(TransitionBody(record))
        }
        let scores = HealthScores(report: await report, redisConfigured: redisURL != nil)
        return CircuitDashboard(current: current, last24h: history, healthScore: scores.overall.value, healthStatus: scores.overall.band.rawValue)
    }

    /// `?circuit=` (optional, a valid circuit name) and `?hours=` (1-720, default 24).
    static func historyQuery(_ request: Request) throws(APIError) -> (String?, Int) {
        let circuit = request.uri.queryParameters.get("circuit")
        if let circuit, !CircuitBreakerRegistry.isValidName(circuit) {
            throw APIError(status: .badRequest, code: "invalid_circuit", message: "circuit must be 1-100 of a-z 0-9 _ . - starting with a letter or digit")
        }
        guard let text = request.uri.queryParameters.get("hours") else { return (circuit, 24) }
        guard let hours = Int(text), (1...720).contains(hours) else {
            throw APIError(status: .badRequest, code: "invalid_hours", message: "hours must be a whole number from 1 to 720")
        }
        return (circuit, hours)
    }

    /// A database failure while reading history is a 503 with a reason, never a dropped
    /// connection nor the driver's text; so is a database that does not answer within 2 s
    /// (the query is abandoned, and the endpoint answers like every health route, in time).
    private static func database<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await withTimeLimit(.seconds(2), onTimeout: { DatabaseDidNotAnswer() }, body)
        } catch {
            throw APIError(status: .serviceUnavailable, code: "database_unavailable", message: "the database did not answer; try again")
        }
    }

    private struct DatabaseDidNotAnswer: Error {}

    static func health(_ report: HealthReport) -> JSONResponse<HealthReport> {
        JSONResponse(report, status: report.status == .fail ? .serviceUnavailable : .ok, contentType: HealthReport.contentType)
    }

    static func text(_ body: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body))
        )
    }
}

extension Request {
    /// `?verbose`, with or without a value, as Kubernetes reads it.
    fileprivate var isVerbose: Bool {
        uri.queryParameters.get("verbose") != nil || uri.query?.split(separator: "&").contains("verbose") == true
    }
}

/// The 0–100 scores of `/health/score` (T03.4), from one run of every check.
///
/// - A component scores by its worst check: pass 100, warn 50, fail 0 — postgres
///   (`SELECT 1` within 1 s, and the internals in `/health/deep`), redis (PING, only when
///   REDIS_URL is set), fila (the backlog), worker (a live worker, no stalled claim loop),
///   scheduler (a live scheduler, no late job).
/// - Each provider's circuit scores CLOSED 100, HALF_OPEN 50, OPEN 0; `circuits` is their
///   mean (100 with none).
/// - The overall score is the mean of postgres, redis (when configured), circuits, fila,
///   worker and scheduler, capped at 49 while any of them is below 50.
/// - Bands: healthy ≥ 80, degraded ≥ 50, unhealthy below.
struct HealthScores {
    let components: [String: HealthScore]
    let providers: [String: HealthScore]
    let overall: HealthScore

    init(report: HealthReport, redisConfigured: Bool) {
        var components: [String: HealthScore] = [:]
        var names = ["postgres", "fila", "worker", "scheduler"]
        if redisConfigured { names.append("redis") }
        for name in names {
            // A component without a check result scores as failed: it was asked for.
            components[name] = HealthScore(report.status(of: name) ?? .fail)
        }
        var providers: [String: HealthScore] = [:]
        for entry in report.checks["circuits:state"] ?? [] {
            if let circuit = entry.observation.componentID {
                providers[circuit] = HealthScore(entry.status)
            } else {
                // The circuits check itself failed (timed out, database down).
                providers["circuits"] = HealthScore(entry.status)
            }
        }
        components["circuits"] = HealthScore.mean(Array(providers.values))
        providers["circuits"] = nil
        self.components = components
        self.providers = providers
        self.overall = HealthScore.overall(Array(components.values))
    }

    struct Body: ResponseEncodable, Sendable, Equatable {
        let overallScore: Int
        let status: String
        let components: [String: Int]
        let providers: [String: Int]
        let bands: [String: String]
        /// Each chip in service, scored alone (`ChipUsage.score`); not part of the overall
        /// score, whose `circuits` already count the chips' breakers. Omitted when the chips
        /// could not be read.
        var chips: [String: Int]?

        enum CodingKeys: String, CodingKey {
            case overallScore = "overall_score"
            case status, components, providers, bands, chips
        }
    }

    /// The seed's shape (`overall_score`, `status`, `components`), plus each provider's
    /// circuit and each component's band.
    var body: Body {
        Body(
            overallScore: overall.value,
            status: overall.band.rawValue,
            components: components.mapValues(\.value),
            providers: providers.mapValues(\.value),
            bands: components.mapValues(\.band.rawValue)
        )
    }
}

/// One `circuit_transitions` row as the history and the dashboard show it, in the table's
/// own column names.
struct TransitionBody: Codable, Sendable, Equatable {
    let circuitName: String
    let fromState: String
    let toState: String
    let reason: String
    let falhasConsecutivas: Int
    let openSeconds: Int?
    let createdAt: Date

    init(_ record: CircuitTransitionRecord) {
        circuitName = record.circuit
        fromState = record.from.rawValue
        toState = record.to.rawValue
        reason = record.reason
        falhasConsecutivas = record.consecutiveFailures
        openSeconds = record.openSeconds
        createdAt = record.createdAt
    }

    enum CodingKeys: String, CodingKey {
        case circuitName = "circuit_name"
        case fromState = "from_state"
        case toState = "to_state"
        case reason
        case falhasConsecutivas = "falhas_consecutivas"
        case openSeconds = "open_seconds"
        case createdAt = "created_at"
    }
}

/// `GET /health/circuits/history`.
struct CircuitHistory: ResponseEncodable, Sendable {
    let circuit: String?
    let hours: Int
    let transitions: [TransitionBody]
}

/// `GET /circuits/dashboard`, the seed's T02.5 shape.
struct CircuitDashboard: ResponseEncodable, Sendable {
    struct Current: Codable, Sendable, Equatable {
        let state: String
        let override: String?
        let processesByState: [String: Int]
        let lastChange: Date?

        init(_ status: CircuitStatus) {
            state = status.worstState.rawValue
            override = status.override?.rawValue
            processesByState = Dictionary(uniqueKeysWithValues: status.processesByState.map { ($0.key.rawValue, $0.value) })
            lastChange = status.lastChange
        }

        enum CodingKeys: String, CodingKey {
            case state, override
            case processesByState = "processes_by_state"
            case lastChange = "last_change"
        }
    }

    let current: [String: Current]
    let last24h: [String: [TransitionBody]]
    let healthScore: Int
    let healthStatus: String

    enum CodingKeys: String, CodingKey {
        case current
        case last24h = "last_24h"
        case healthScore = "health_score"
        case healthStatus = "health_status"
    }
}
