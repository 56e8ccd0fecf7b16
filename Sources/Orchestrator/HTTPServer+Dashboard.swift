#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PostgresNIO
import Primitives
import Resilience

/// `GET /dashboard`: `fila status` as one HTML page for a browser or a phone, refreshed every
/// 10 s (``DashboardPage``). Opened with the admin token or the read-only dashboard token
/// (``DashboardAuthorization``):
///
/// ```
/// open "https://fila.example.com/dashboard?token=$DASHBOARD_TOKEN"
/// ```
///
/// The token in the address is swapped for a cookie at once (a 303 to `/dashboard`), so it
/// leaves the address bar and the history. A database that does not answer in time is a 503
/// page saying so, which retries on its own.
struct DashboardAPI: Sendable {
    let client: PostgresClient
    let redisURL: RedisURL?
    let access: DashboardAuthorization<APIRequestContext>
    /// The zone the page's times are written in (`TZ`).
    let timeZone: TimeZone
    /// How long reading the report may take before the page is a 503: the health checks take
    /// at most 1.5 s, then a handful of small queries.
    var readTimeLimit: Duration = .seconds(8)
    let logger: Logger

    func register(on router: Router<APIRequestContext>) {
        router.group("/dashboard")
            .add(middleware: access)
            .get { _, _ in try await page() }
    }

    func page() async throws -> Response {
        let report: StatusReport
        do {
            report = try await withTimeLimit(readTimeLimit, onTimeout: { [readTimeLimit] in DashboardReadTimedOut(limit: readTimeLimit) }) { [client, redisURL, logger] in
                try await StatusReport.read(client: client, redisURL: redisURL, logger: logger)
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            logger.error("dashboard: reading the report failed", metadata: ["error": .string(String(reflecting: error))])
            return DashboardPage.response(DashboardPage.unavailable(renderedAt: Date(), timeZone: timeZone), status: .serviceUnavailable)
        }
        return DashboardPage.response(DashboardPage(report: report, renderedAt: Date(), timeZone: timeZone).html, status: .ok)
    }

    private struct DashboardReadTimedOut: Error, CustomStringConvertible {
        let limit: Duration
        var description: String { "the database did not answer within \(limit)" }
    }
}

/// Who may open the dashboard: a browser cannot send a bearer header, so besides
/// `Authorization: Bearer TOKEN` it accepts the `fila_dashboard` cookie, which
/// `GET /dashboard?token=TOKEN` sets. The admin token (`ADMIN_TOKEN`) and the read-only
/// dashboard token (`DASHBOARD_TOKEN`) both open it; the dashboard token opens nothing else,
/// because every other route checks its own token. With neither configured the dashboard is
/// off (403).
///
/// Its refusals are small HTML pages, since a person reads them.
struct DashboardAuthorization<Context: RequestContext>: RouterMiddleware {
    let adminToken: String?
    let dashboardToken: String?

    static var cookieName: String { "fila_dashboard" }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let tokens = [adminToken, dashboardToken].compactMap { $0 }
        guard !tokens.isEmpty else {
            return DashboardPage.response(DashboardPage.disabled(), status: .forbidden)
        }
        if let presented = request.uri.queryParameters.get("token") {
            guard Self.matches(String(presented), tokens) else {
                return DashboardPage.response(DashboardPage.login(reason: "That token is not valid."), status: .unauthorized)
            }
            // The token leaves the address bar (and the history) for a cookie only this path sees.
            // Behind a TLS-terminating proxy (Railway, a load balancer) the cookie is for HTTPS only.
            let secure = request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https"
            var cookie = "\(Self.cookieName)=\(Self.cookieValue(String(presented))); HttpOnly; SameSite=Lax; Path=/dashboard"
            if secure { cookie += "; Secure" }
            return Response(
                status: .seeOther,
                headers: [.location: "/dashboard", .setCookie: cookie, .cacheControl: "no-store", HTTPField.Name("Referrer-Policy")!: "no-referrer"]
            )
        }
        if let bearer = request.headers[.authorization] {
            guard bearer.hasPrefix("Bearer "), Self.matches(String(bearer.dropFirst(7)), tokens) else {
                return DashboardPage.response(DashboardPage.login(reason: "The bearer token is not valid."), status: .unauthorized)
            }
            return try await next(request, context)
        }
        guard let cookie = Self.cookie(in: request.headers) else {
            return DashboardPage.response(DashboardPage.login(reason: nil), status: .unauthorized)
        }
        guard Self.matches(cookie, tokens) else {
            // A token since rotated: forget it, so the next visit starts clean.
            var response = DashboardPage.response(DashboardPage.login(reason: "The saved token is no longer valid."), status: .unauthorized)
            response.headers[.setCookie] = "\(Self.cookieName)=; HttpOnly; SameSite=Lax; Path=/dashboard; Max-Age=0"
            return response
        }
        return try await next(request, context)
    }

    /// Whether `presented` is one of `tokens`, compared with each in constant time.
    private static func matches(_ presented: String, _ tokens: [String]) -> Bool {
        let bytes = Array(presented.utf8)
        // Every token is compared, so the time does not say which one (if any) matched.
        return tokens.reduce(false) { matched, token in constantTimeEqual(bytes, Array(token.utf8)) || matched }
    }

    /// The `fila_dashboard` cookie's token, from any `Cookie` field.
    static func cookie(in headers: HTTPFields) -> String? {
        for field in headers[values: .cookie] {
            for pair in field.split(separator: ";") {
                let pair = pair.drop { $0 == " " }
                guard pair.hasPrefix("\(cookieName)=") else { continue }
                let value = pair.dropFirst(cookieName.count + 1)
                return value.isEmpty ? nil : percentDecoded(value)
            }
        }
        return nil
    }

    /// A token as a cookie value: every byte but letters, digits and `-._~` percent-encoded,
    /// since a token may hold `;`, `,`, spaces or quotes, which a cookie value cannot.
    static func cookieValue(_ token: String) -> String {
        var out = ""
        for byte in token.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"),
               let high = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex), high < utf8.endIndex,
               let low = utf8.index(index, offsetBy: 2, limitedBy: utf8.endIndex), low < utf8.endIndex,
               let value = UInt8(String(decoding: [utf8[high], utf8[low]], as: UTF8.self), radix: 16) {
                bytes.append(value)
                index = utf8.index(index, offsetBy: 3)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
