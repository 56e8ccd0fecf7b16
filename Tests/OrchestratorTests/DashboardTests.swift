import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Testing

@testable import Orchestrator

/// `GET /dashboard` through the router against a real database: who gets in (token, cookie,
/// bearer; 401, 403), what the page holds and how it is served, escaping of what the database
/// says, and a 503 page when Postgres does not answer. Serialized: each page runs the health
/// checks at once on up to eight connections.
@Suite("GET /dashboard", .migratedDatabase, .serialized, .timeLimit(.minutes(2)))
struct DashboardTests {
    let logger = TestDatabase.logger
    let adminToken = "admin-token-0123456789"
    let dashboardToken = "dashboard-token-0123456789"

    private func withRouter(
        adminToken: String?, dashboardToken: String?, client: PostgresClient? = nil, readTimeLimit: Duration = .seconds(20),
        _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void
    ) async throws {
        let client = try client ?? TestDatabase.current.client
        let dashboard = DashboardAPI(
            client: client, redisURL: nil,
            access: DashboardAuthorization(adminToken: adminToken, dashboardToken: dashboardToken),
            timeZone: TimeZone(identifier: "America/Sao_Paulo")!, readTimeLimit: readTimeLimit, logger: logger
        )
        let guardrails = GuardrailsAPI(client: client, admin: AdminAuthorization(token: adminToken), logger: logger)
        let app = Application(router: HTTPServer.makeRouter(guardrails: guardrails, dashboard: dashboard))
        try await app.test(.router) { http in try await body(http, client) }
    }

    private func get(_ http: any TestClientProtocol, _ uri: String, _ headers: HTTPFields = [:]) async throws -> (HTTPResponse.Status, HTTPFields, String) {
        try await http.execute(uri: uri, method: .get, headers: headers) { ($0.status, $0.headers, String(buffer: $0.body)) }
    }

    @Test func offWithoutAnyTokenAndSaysWhichToSet() async throws {
        try await withRouter(adminToken: nil, dashboardToken: nil) { http, _ in
            for uri in ["/dashboard", "/dashboard?token=\(dashboardToken)"] {
                let (status, headers, body) = try await get(http, uri, [.authorization: "Bearer \(dashboardToken)"])
                #expect(status == .forbidden)
                #expect(headers[.contentType] == "text/html; charset=utf-8")
                #expect(headers[.setCookie] == nil)
                for text in ["dashboard_disabled", "DASHBOARD_TOKEN", "ADMIN_TOKEN"] { #expect(body.contains(text), "\(text)") }
            }
        }
    }

    @Test func aTokenInTheAddressBecomesACookieAndOpensThePage() async throws {
        try await withRouter(adminToken: adminToken, dashboardToken: dashboardToken) { http, client in
            try await DashboardFixture.insert(into: client, logger: logger)
            let (status, headers, _) = try await get(http, "/dashboard?token=\(dashboardToken)")
            #expect(status == .seeOther)
            #expect(headers[.location] == "/dashboard")
            #expect(headers[.setCookie] == "fila_dashboard=\(dashboardToken); HttpOnly; SameSite=Lax; Path=/dashboard")
            #expect(headers[.cacheControl] == "no-store")

            for credential: HTTPFields in [
                [.cookie: "theme=dark; fila_dashboard=\(dashboardToken)"], [.cookie: "fila_dashboard=\(adminToken)"],
                [.authorization: "Bearer \(dashboardToken)"], [.authorization: "Bearer \(adminToken)"],
            ] {
                let (status, headers, body) = try await get(http, "/dashboard", credential)
                #expect(status == .ok, "\(credential)")
                #expect(headers[.contentType] == "text/html; charset=utf-8")
                #expect(headers[.cacheControl] == "no-store")
                #expect(body.contains(DashboardFixture.alertTitle), "\(credential)")
            }
        }
    }

    /// Behind a TLS proxy the cookie is Secure; a token with characters a cookie cannot hold
    /// survives the round trip.
    @Test func theCookieCarriesAnyTokenAndIsSecureBehindHTTPS() async throws {
        let odd = "dash; board,\"token\" 0123456789"
        try await withRouter(adminToken: nil, dashboardToken: odd) { http, _ in
            let query = odd.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let (status, headers, _) = try await get(http, "/dashboard?token=\(query)", [HTTPField.Name("X-Forwarded-Proto")!: "https"])
            #expect(status == .seeOther)
            let cookie = try #require(headers[.setCookie])
            #expect(cookie.hasSuffix("; HttpOnly; SameSite=Lax; Path=/dashboard; Secure"))
            let pair = try #require(cookie.split(separator: ";").first)
            #expect(!pair.dropFirst("fila_dashboard=".count).contains { " ,\"".contains($0) })
            #expect(try await get(http, "/dashboard", [.cookie: String(pair)]).0 == .ok)
        }
    }

    @Test func aWrongTokenIs401WithHowToLogIn() async throws {
        try await withRouter(adminToken: adminToken, dashboardToken: dashboardToken) { http, _ in
            for (uri, headers) in [
                ("/dashboard", HTTPFields()),
                ("/dashboard?token=wrong-token-0123456789", HTTPFields()),
                ("/dashboard?token=\(dashboardToken)x", HTTPFields()),
                ("/dashboard", [.authorization: "Bearer \(dashboardToken.dropLast())"]),
                ("/dashboard", [.authorization: dashboardToken]),
                // A valid cookie does not rescue a wrong bearer token.
                ("/dashboard", [.authorization: "Bearer nope", .cookie: "fila_dashboard=\(dashboardToken)"]),
            ] {
                let (status, answer, body) = try await get(http, uri, headers)
                #expect(status == .unauthorized, "\(uri) \(headers)")
                #expect(answer[.contentType] == "text/html; charset=utf-8")
                #expect(answer[.setCookie] == nil)
                #expect(body.contains("/dashboard?token=TOKEN") && body.contains("DASHBOARD_TOKEN"))
                #expect(!body.contains(DashboardFixture.alertTitle))
            }
            // A cookie that no longer opens the page is forgotten.
            let (status, answer, _) = try await get(http, "/dashboard", [.cookie: "fila_dashboard=rotated-token-0123456789"])
            #expect(status == .unauthorized)
            #expect(answer[.setCookie]?.contains("fila_dashboard=;") == true && answer[.setCookie]?.contains("Max-Age=0") == true)
        }
    }

    @Test func theDashboardTokenOpensNoAdminRoute() async throws {
        try await withRouter(adminToken: adminToken, dashboardToken: dashboardToken) { http, _ in
            let body = ByteBuffer(string: #"{"motivo": "t"}"#)
            for headers: HTTPFields in [[.authorization: "Bearer \(dashboardToken)"], [.cookie: "fila_dashboard=\(dashboardToken)"]] {
                try await http.execute(uri: "/admin/medicos/medico-1/unblock", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == .unauthorized, "\(headers)")
                }
            }
            // The admin token gets past the check (nobody is blocked: 404).
            try await http.execute(uri: "/admin/medicos/medico-1/unblock", method: .post, headers: [.authorization: "Bearer \(adminToken)"], body: body) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test func everySectionShowsTheDatabasesState() async throws {
        try await withRouter(adminToken: nil, dashboardToken: dashboardToken) { http, client in
            try await DashboardFixture.insert(into: client, logger: logger)
            let (status, headers, body) = try await get(http, "/dashboard", [.authorization: "Bearer \(dashboardToken)"])
            #expect(status == .ok)
            let policy = try #require(headers[.contentSecurityPolicy])
            #expect(policy.hasPrefix("default-src 'none';"))
            let scripts = try #require(policy.split(separator: ";").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("script-src ") })
            #expect(scripts.contains("'sha256-") && !scripts.contains("unsafe"))
            #expect(body.contains(#"<meta name="viewport" content="width=device-width, initial-scale=1">"#))
            for id in ["queue", "sends", "workers", "circuits", "jobs", "alerts", "pause"] {
                #expect(body.contains("<section id=\"\(id)\""), "section \(id)")
            }
            // One circuit of two OPEN, a late job and the pause: each component at 50 or more.
            #expect(body.contains(#"id="band">degraded</span> <span class="score">score 70</span>"#))
            #expect(body.contains("<code>\(DashboardFixture.worker)</code>"))
            #expect(body.contains("<b id=\"sends-total\">\(DashboardFixture.sentLastHour)</b>"))
            #expect(body.contains("<svg class=\"chart\"") && body.contains("60 min ago") && body.contains(">now</text>"))
            #expect(body.contains(DashboardFixture.pauseMotivo) && body.contains("Sending is paused"))
            // The OPEN circuit with its last transitions, newest first.
            let circuits = try #require(body.range(of: "<section id=\"circuits\"")).lowerBound
            let open = try #require(body.range(of: "<code>\(DashboardFixture.openCircuit)</code> <span class=\"pill bad\">OPEN</span>", range: circuits..<body.endIndex))
            #expect(body[open.upperBound...].contains("probe failed: HTTP 503"))
            // The late job before the healthy one.
            let late = try #require(body.range(of: "<code>\(DashboardFixture.lateJob)</code>"))
            let ok = try #require(body.range(of: "<code>\(DashboardFixture.okJob)</code>"))
            #expect(late.lowerBound < ok.lowerBound)
            #expect(body[late.upperBound...].hasPrefix("</td><td><span class=\"pill bad\">late</span>"))
        }
    }

    @Test func theBarsAreTheMinutesSends() async throws {
        let client = try TestDatabase.current.client
        try await client.query(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at, enviada_em)
            SELECT 'medico-1', '5511999990000', 'olá', 'enviada', 'SENT', t, t
              FROM (SELECT now() - interval '2 hours' UNION ALL SELECT now() - interval '61 minutes'
                    UNION ALL SELECT now() UNION ALL SELECT now() UNION ALL SELECT now() - interval '1 minute') x(t)
            """,
            logger: logger
        )
        try await client.query(
            "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at) VALUES ('medico-2', '5511999990000', 'x', 'erro', 'FAILED_PROVIDER', now())",
            logger: logger
        )
        let report = try await StatusReport.read(client: client, redisURL: nil, logger: logger)
        #expect(report.sendsPerMinute.count == 60)
        // Three in this minute and the one before (a minute may have turned since the insert),
        // none of the older ones or the failure.
        #expect(report.sendsPerMinute.reduce(0, +) == 3)
        #expect(report.sendsPerMinute.suffix(3).reduce(0, +) == 3)
        let chart = DashboardPage.chart(report.sendsPerMinute)
        #expect(chart.components(separatedBy: "<rect ").count - 1 == 60)
    }

    @Test func anEmptyHourIsAFlatChart() async throws {
        try await withRouter(adminToken: adminToken, dashboardToken: nil) { http, _ in
            let (status, _, body) = try await get(http, "/dashboard", [.authorization: "Bearer \(adminToken)"])
            #expect(status == .ok)
            #expect(body.contains("<b id=\"sends-total\">0</b> sent in the last hour"))
            #expect(body.contains("height=\"0.0\"><title>this minute: 0 sent</title>"))
            #expect(body.contains("No alert is open.") && body.contains("Workers claim messages as they come due."))
        }
    }

    @Test func whatTheDatabaseSaysIsEscaped() async throws {
        let title = #"<script>alert("t")</script> & más"#
        let motivo = #"<img src=x onerror='alert(1)'>"#
        try await withRouter(adminToken: adminToken, dashboardToken: nil) { http, client in
            try await DashboardFixture.insert(into: client, alertTitle: title, pauseMotivo: motivo, logger: logger)
            let (status, _, body) = try await get(http, "/dashboard", [.cookie: "fila_dashboard=\(adminToken)"])
            #expect(status == .ok)
            #expect(body.contains("&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt; &amp; más"))
            #expect(body.contains("&lt;img src=x onerror=&#39;alert(1)&#39;&gt;"))
            #expect(!body.contains("<script>alert"))
            #expect(!body.contains("<img"))
            // The page's one script, and no other.
            #expect(body.components(separatedBy: "<script").count == 2)
        }
    }

    /// Postgres out of reach: a 503 page that says so and retries, within the read's limit.
    @Test func anUnreachableDatabaseIsA503Page() async throws {
        let unreachable = PostgresClient(
            configuration: .init(host: "127.0.0.1", port: 1, username: "fila", password: "secret-pw", database: "fila", tls: .disable),
            backgroundLogger: logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await unreachable.run() }
            defer { group.cancelAll() }
            try await withRouter(adminToken: adminToken, dashboardToken: nil, client: unreachable, readTimeLimit: .seconds(3)) { http, _ in
                let start = ContinuousClock.now
                let (status, headers, body) = try await get(http, "/dashboard", [.authorization: "Bearer \(adminToken)"])
                #expect(status == .serviceUnavailable)
                #expect(headers[.contentType] == "text/html; charset=utf-8")
                #expect(body.contains("The database did not answer"))
                #expect(body.contains(#"<meta http-equiv="refresh" content="10">"#))
                #expect(!body.contains("secret-pw"))
                #expect(ContinuousClock.now - start < .seconds(15))
            }
        }
    }
}
