#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import NIOCore
import Primitives

/// The HTML of `GET /dashboard`, rendered from one ``StatusReport``: plain HTML and CSS with a
/// few lines of script that refresh it, nothing loaded from elsewhere, one column on a phone.
///
/// Every text from the database (an alert's title, a pause's motivo, a worker's id) is
/// escaped with ``escaped(_:)``; the content security policy allows no script but the page's
/// own, by its hash, as a second line of defence.
struct DashboardPage {
    let report: StatusReport
    let renderedAt: Date
    let timeZone: TimeZone

    /// How often the page reads itself again, in seconds.
    static let refreshSeconds = 10

    /// Re-fetches the page every 10 s while the tab is visible and swaps the body; a 401 or
    /// 403 (a token since rotated) reloads, so the login page shows. Marks the document (and
    /// counts the refreshes on it), so a test can tell it ran: the policy blocks it if its
    /// hash is wrong.
    static let script = """
        (function () {
          document.documentElement.setAttribute("data-refresh", "on");
          var busy = false, refreshed = 0;
          function refresh() {
            if (document.hidden || busy) return;
            busy = true;
            fetch("/dashboard", {credentials: "same-origin", cache: "no-store"}).then(function (response) {
              if (response.status === 401 || response.status === 403) { location.reload(); return null; }
              return response.text();
            }).then(function (html) {
              if (html === null) return;
              var page = new DOMParser().parseFromString(html, "text/html");
              document.title = page.title;
              document.body.replaceWith(document.adoptNode(page.body));
              document.documentElement.setAttribute("data-refreshed", String(++refreshed));
            }).catch(function () {
              var stale = document.getElementById("stale");
              if (stale) stale.hidden = false;
            }).then(function () { busy = false; });
          }
          setInterval(refresh, \(refreshSeconds * 1000));
          document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
        })();
        """

    /// The policy of every page this file renders: nothing from elsewhere, the inline styles,
    /// the one script by its SHA-256, fetches back to this origin only.
    static let contentSecurityPolicy: String = {
        let hash = Data(SHA256.hash(Array(script.utf8))).base64EncodedString()
        return "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-\(hash)'; img-src data:; connect-src 'self'; "
            + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    }()

    /// `html` as an answer: never cached (it holds live data behind a token), never framed.
    static func response(_ html: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store", .contentSecurityPolicy: contentSecurityPolicy,
                .xContentTypeOptions: "nosniff", HTTPField.Name("Referrer-Policy")!: "no-referrer",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: html))
        )
    }

    /// `text` safe anywhere in HTML, in an element or a quoted attribute.
    static func escaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    // MARK: the page

    var html: String {
        let band = report.band.rawValue
        let components = report.components.sorted { $0.key < $1.key }.map { (name: String, score: Int) -> String in
            "\(Self.escaped(name)) <b class=\"\(score >= 80 ? "good" : score >= 50 ? "warn" : "bad")\">\(score)</b>"
        }
        return Self.document(
            title: "Fila: \(band) (\(report.score))",
            head: "<script>\(Self.script)</script>\n<noscript><meta http-equiv=\"refresh\" content=\"\(Self.refreshSeconds)\"></noscript>",
            body: """
                <header>
                <h1>Fila <span class="pill \(Self.tone(band))" id="band">\(Self.escaped(band))</span> <span class="score">score \(report.score)</span></h1>
                <p class="muted">\(components.joined(separator: " · "))</p>
                <p class="muted">Rendered <time id="rendered">\(Self.escaped(Self.format(renderedAt, in: timeZone, withZone: false)))</time> (times in \(Self.escaped(timeZone.identifier))); refreshes every \(Self.refreshSeconds) s.</p>
                <p id="stale" class="banner warn" hidden>The server did not answer the last refresh: this is older data.</p>
                </header>
                <main>
                \(pauseSection)
                \(alertsSection)
                \(queueSection)
                \(sendsSection)
                \(workersSection)
                \(circuitsSection)
                \(jobsSection)
                </main>
                """
        )
    }

    private var pauseSection: String {
        guard let pause = report.pause else {
            return section("pause", "Sending", "<p><span class=\"pill good\">sending</span> Workers claim messages as they come due.</p>")
        }
        let since = pause["desde"]?.stringValue.map { "since \(local($0))" + (pause["paused_seconds"]?.integerValue.map { " (\(Self.age($0)) ago)" } ?? "") } ?? ""
        let until = pause["ate"]?.stringValue.map { "until \(local($0))" } ?? "until someone runs <code>SELECT ops.resume_sending('why');</code>"
        return section("pause", "Sending is paused", """
            <div class="banner bad">
            <p><span class="pill bad">paused</span> by <b>\(Self.escaped(pause["por"]?.stringValue ?? "?"))</b> \(since), \(until).</p>
            <p class="motivo">\(Self.escaped(pause["motivo"]?.stringValue ?? ""))</p>
            <p class="muted">No worker claims a message while paused; those already claimed finish. <code>SELECT ops.resume_sending('why');</code> ends it.</p>
            </div>
            """, tone: "bad")
    }

    private var alertsSection: String {
        guard !report.alerts.isEmpty else {
            return section("alerts", "Open alerts", "<p class=\"muted\">No alert is open.</p>")
        }
        return section("alerts", "Open alerts (\(report.alerts.count))", Self.table(["Alert", "Firing for"], wrapping: [0], report.alerts.map { alert in
            let key = alert["key"]?.stringValue ?? ""
            return [
                "<b class=\"bad\">\(Self.escaped(alert["title"]?.stringValue ?? ""))</b><br><span class=\"muted\">"
                    + Self.escaped(alert["rule"]?.stringValue ?? "") + (key.isEmpty ? "" : " · \(Self.escaped(key))") + "</span>",
                Self.age(alert["firing_seconds"]?.integerValue),
            ]
        }), tone: "bad")
    }

    private var queueSection: String {
        func tile(_ label: String, _ value: JSONValue?, unit: String = "", tone: String = "") -> String {
            "<div class=\"tile\"><span class=\"\(tone.isEmpty ? "value" : "value \(tone)")\">\(value?.integerValue.map(String.init) ?? "–")\(unit)</span><span class=\"label\">\(label)</span></div>"
        }
        let oldest = report.queue["mensagem_mais_antiga_minutos"]?.integerValue ?? 0
        let errors = report.queue["erros_ultima_hora"]?.integerValue ?? 0
        return section("queue", "Queue", """
            <div class="tiles">
            \(tile("pending", report.queue["pendentes"]))
            \(tile("oldest due", report.queue["mensagem_mais_antiga_minutos"], unit: " min", tone: oldest >= 30 ? "bad" : oldest >= 5 ? "warn" : ""))
            \(tile("processing", report.queue["processando"]))
            \(tile("sent, 5 min", report.queue["enviadas_5_min"]))
            \(tile("sent, 1 h", report.queue["enviadas_ultima_hora"]))
            \(tile("errors, 1 h", report.queue["erros_ultima_hora"], tone: errors > 0 ? "bad" : ""))
            </div>
            """)
    }

    private var sendsSection: String {
        let counts = report.sendsPerMinute
        let total = counts.reduce(0, +)
        let peak = counts.max() ?? 0
        let summary = "<p><b id=\"sends-total\">\(total)</b> sent in the last hour; at most <b>\(peak)</b> in a minute.</p>"
        return section("sends", "Sends per minute", summary + Self.chart(counts))
    }

    /// A bar per minute, oldest on the left; the y axis from 0 to the busiest minute.
    static func chart(_ counts: [Int]) -> String {
        let (width, height) = (420.0, 170.0)
        let (left, right, top, bottom) = (34.0, 6.0, 10.0, 26.0)
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let peak = max(counts.max() ?? 0, 1)
        let slot = plotWidth / Double(max(counts.count, 1))
        let total = counts.reduce(0, +)
        let label = "Messages sent per minute over the last hour: \(total) in all, at most \(counts.max() ?? 0) in a minute"
        var bars = ""
        for (index, count) in counts.enumerated() {
            let barHeight = Double(count) / Double(peak) * plotHeight
            let minutesAgo = counts.count - 1 - index
            bars += "<rect x=\"\(tenths(left + Double(index) * slot + 0.5))\" y=\"\(tenths(top + plotHeight - barHeight))\" "
                + "width=\"\(tenths(max(slot - 1.5, 1)))\" height=\"\(tenths(barHeight))\">"
                + "<title>\(minutesAgo == 0 ? "this minute" : "\(minutesAgo) min ago"): \(count) sent</title></rect>"
        }
        let base = top + plotHeight
        return """
            <svg class="chart" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(escaped(label))" xmlns="http://www.w3.org/2000/svg">
            <title>\(escaped(label))</title>
            <line class="axis" x1="\(Int(left))" y1="\(Int(top))" x2="\(Int(left))" y2="\(Int(base))"/>
            <line class="axis" x1="\(Int(left))" y1="\(Int(base))" x2="\(Int(width - right))" y2="\(Int(base))"/>
            <line class="grid" x1="\(Int(left))" y1="\(Int(top))" x2="\(Int(width - right))" y2="\(Int(top))"/>
            <text x="\(Int(left) - 4)" y="\(Int(top) + 4)" text-anchor="end">\(counts.max() ?? 0)</text>
            <text x="\(Int(left) - 4)" y="\(Int(base))" text-anchor="end">0</text>
            <g class="bars">\(bars)</g>
            <text x="\(Int(left))" y="\(Int(height) - 6)">60 min ago</text>
            <text x="\(Int(left + plotWidth / 2))" y="\(Int(height) - 6)" text-anchor="middle">30 min</text>
            <text x="\(Int(width - right))" y="\(Int(height) - 6)" text-anchor="end">now</text>
            </svg>
            """
    }

    private var workersSection: String {
        guard !report.workers.isEmpty else {
            return section("workers", "Workers", "<p class=\"bad\">No fila process is alive: nothing is sending.</p>", tone: "bad")
        }
        let headings = ["Process", "State", "In flight", "<abbr title=\"since its last heartbeat\">Beat</abbr>", "<abbr title=\"since its claim loop last turned\">Loop</abbr>"]
        return section("workers", "Workers (\(report.workers.count))", Self.table(headings, wrapping: [0], report.workers.map { worker in
            [
                "<code>\(Self.escaped(worker["id"]?.stringValue ?? ""))</code><br><span class=\"muted\">\(Self.escaped(worker["kind"]?.stringValue ?? ""))</span>",
                Self.pill(worker["state"]?.stringValue ?? ""), worker["in_flight"]?.integerValue.map(String.init) ?? "–",
                Self.age(worker["heartbeat_age_seconds"]?.integerValue),
                worker["claim_loop_age_seconds"]?.integerValue.map { Self.age($0) } ?? "<span class=\"muted\">–</span>",
            ]
        }))
    }

    private var circuitsSection: String {
        guard !report.circuits.isEmpty else {
            return section("circuits", "Circuits", "<p class=\"muted\">No circuit has changed state: every provider's breaker is CLOSED.</p>")
        }
        let items = report.circuits.map { circuit -> String in
            let state = circuit["state"]?.stringValue ?? ""
            var head = "<h3><code>\(Self.escaped(circuit["circuit"]?.stringValue ?? ""))</code> \(Self.pill(state))"
            if let override = circuit["override"]?.stringValue {
                head += " <span class=\"muted\">held \(Self.escaped(override)) by hand: \(Self.escaped(circuit["override_reason"]?.stringValue ?? ""))</span>"
            }
            head += "</h3>"
            guard case .array(let transitions)? = circuit["transitions"] else { return "<div class=\"circuit\">\(head)</div>" }
            let rows = transitions.map { transition -> String in
                let worker = transition["worker_id"]?.stringValue.map { " <span class=\"muted\">on <code>\(Self.escaped($0))</code></span>" } ?? ""
                return "<li><span class=\"\(Self.tone(transition["from_state"]?.stringValue ?? ""))\">\(Self.escaped(transition["from_state"]?.stringValue ?? ""))</span> → "
                    + "<b class=\"\(Self.tone(transition["to_state"]?.stringValue ?? ""))\">\(Self.escaped(transition["to_state"]?.stringValue ?? ""))</b> "
                    + "<time title=\"\(local(transition["at"]?.stringValue ?? ""))\">\(Self.age(transition["seconds_ago"]?.integerValue)) ago</time>\(worker)"
                    + "<br><span class=\"reason\">\(Self.escaped(transition["reason"]?.stringValue ?? ""))</span></li>"
            }
            return "<div class=\"circuit\">\(head)<ol class=\"transitions\">\(rows.joined())</ol></div>"
        }
        let open = report.circuits.filter { ["OPEN", "FORCED_OPEN"].contains($0["state"]?.stringValue ?? "") }.count
        return section("circuits", "Circuits" + (open > 0 ? " (\(open) open)" : ""), items.joined(separator: "\n"), tone: open > 0 ? "bad" : "")
    }

    private var jobsSection: String {
        guard !report.jobs.isEmpty else {
            return section("jobs", "Jobs", "<p class=\"muted\">No periodic job is registered yet (a scheduler registers them when it starts).</p>")
        }
        return section("jobs", "Jobs", Self.table(["Job", "SLA state", "Last run", "Last success", "SLA"], wrapping: [2], report.jobs.map { job in
            let last = job["last_status"]?.stringValue
            let duration = job["last_duration_ms"]?.integerValue.map { " in \(Self.duration(milliseconds: $0))" } ?? ""
            return [
                "<code>\(Self.escaped(job["name"]?.stringValue ?? ""))</code>", Self.pill(job["state"]?.stringValue ?? ""),
                last.map { "<span class=\"\(Self.tone($0))\">\(Self.escaped($0))</span>\(duration)" } ?? "<span class=\"muted\">never</span>",
                job["last_success_seconds_ago"]?.integerValue.map { Self.age($0) + " ago" } ?? "<span class=\"muted\">never</span>",
                job["sla_seconds"]?.integerValue.map { Self.age($0) } ?? "–",
            ]
        }))
    }

    // MARK: pieces

    private func section(_ id: String, _ heading: String, _ content: String, tone: String = "") -> String {
        "<section id=\"\(id)\"\(tone.isEmpty ? "" : " class=\"\(tone)-edge\"")><h2>\(heading)</h2>\n\(content)\n</section>"
    }

    /// `rows` of cells already escaped, under `headings`; the columns in `wrapping` (free
    /// text) wrap, the others stay on one line and the table scrolls sideways on a narrow screen.
    private static func table(_ headings: [String], wrapping: Set<Int> = [], _ rows: [[String]]) -> String {
        "<div class=\"scroll\"><table><thead><tr>" + headings.map { "<th>\($0)</th>" }.joined() + "</tr></thead><tbody>"
            + rows.map { row in
                "<tr>" + row.enumerated().map { wrapping.contains($0.offset) ? "<td class=\"text\">\($0.element)</td>" : "<td>\($0.element)</td>" }.joined() + "</tr>"
            }.joined() + "</tbody></table></div>"
    }

    private static func pill(_ state: String) -> String {
        "<span class=\"pill \(tone(state))\">\(escaped(state))</span>"
    }

    /// The colour a state is shown in.
    static func tone(_ state: String) -> String {
        switch state {
        case "healthy", "alive", "ok", "CLOSED", "sending", "success": "good"
        case "degraded", "HALF_OPEN", "FORCED_CLOSED", "never_run", "disabled", "running", "skipped": "warn"
        case "unhealthy", "LOST", "STALLED", "OPEN", "FORCED_OPEN", "late", "running_over_sla", "failed", "timeout", "paused": "bad"
        default: "muted"
        }
    }

    /// `seconds` as a person says it: 45 s, 12 min, 3 h 5 min, 2 d 4 h.
    static func age(_ seconds: Int?) -> String {
        guard let seconds else { return "–" }
        let value = max(seconds, 0)
        switch value {
        case ..<60: return "\(value) s"
        case ..<3600: return "\(value / 60) min"
        case ..<86400: return "\(value / 3600) h" + (value % 3600 / 60 > 0 ? " \(value % 3600 / 60) min" : "")
        default: return "\(value / 86400) d" + (value % 86400 / 3600 > 0 ? " \(value % 86400 / 3600) h" : "")
        }
    }

    private static func duration(milliseconds: Int) -> String {
        milliseconds < 1000 ? "\(milliseconds) ms" : milliseconds < 60_000 ? "\(tenths(Double(milliseconds) / 1000)) s" : age(milliseconds / 1000)
    }

    /// `value` with one decimal: `12.5`, `3.0`.
    private static func tenths(_ value: Double) -> String {
        let scaled = Int((value * 10).rounded())
        return "\(scaled < 0 ? "-" : "")\(abs(scaled) / 10).\(abs(scaled) % 10)"
    }

    /// A report's timestamp (``StatusReport/timestamp(_:)``) in the page's zone, escaped.
    private func local(_ timestamp: String) -> String {
        guard let date = try? Date.ISO8601FormatStyle().parse(timestamp) else { return Self.escaped(timestamp) }
        return Self.escaped(Self.format(date, in: timeZone, withZone: false))
    }

    /// `date` as `2026-12-02 06:14:05 America/Sao_Paulo` (without the zone's name when
    /// `withZone` is false).
    static func format(_ date: Date, in timeZone: TimeZone, withZone: Bool = true) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ value: Int?) -> String { (value ?? 0) < 10 ? "0\(value ?? 0)" : "\(value ?? 0)" }
        return "\(parts.year ?? 0)-\(two(parts.month))-\(two(parts.day)) \(two(parts.hour)):\(two(parts.minute)):\(two(parts.second))"
            + (withZone ? " \(timeZone.identifier)" : "")
    }

    // MARK: the other pages

    /// The page for a database that did not answer: it says so and tries again by itself.
    static func unavailable(renderedAt: Date, timeZone: TimeZone) -> String {
        document(
            title: "Fila: database unavailable",
            head: "<meta http-equiv=\"refresh\" content=\"\(refreshSeconds)\">",
            body: """
                <header><h1>Fila <span class="pill bad">database unavailable</span></h1></header>
                <main><section id="unavailable" class="bad-edge"><h2>The database did not answer</h2>
                <p>Postgres did not answer in time, so there is nothing to show. The queue, workers and alerts live there:
                check <code>/health/ready</code> and the server's log. This page tries again every \(refreshSeconds) s.</p>
                <p class="muted">At \(escaped(format(renderedAt, in: timeZone))).</p></section></main>
                """
        )
    }

    /// The page for a visitor without a valid token: how to get in.
    static func login(reason: String?) -> String {
        document(
            title: "Fila: log in",
            head: "",
            body: """
                <header><h1>Fila dashboard</h1></header>
                <main><section id="login"><h2>Log in</h2>
                \(reason.map { "<p class=\"bad\">\(escaped($0))</p>" } ?? "")
                <p>Open <code>/dashboard?token=TOKEN</code> once with the dashboard token (<code>DASHBOARD_TOKEN</code>) or the admin token
                (<code>ADMIN_TOKEN</code>): the browser keeps it in a cookie for this page and the address loses it. Scripts can send
                <code>Authorization: Bearer TOKEN</code> instead.</p>
                <form method="get" action="/dashboard"><label>Token <input type="password" name="token" autocomplete="current-password" required></label>
                <button type="submit">Open</button></form>
                </section></main>
                """
        )
    }

    /// The page when no token is configured: the dashboard is off.
    static func disabled() -> String {
        document(
            title: "Fila: dashboard disabled",
            head: "",
            body: """
                <header><h1>Fila dashboard</h1></header>
                <main><section id="disabled" data-error="dashboard_disabled"><h2>The dashboard is off</h2>
                <p>No token is configured for it (<code>dashboard_disabled</code>). Set <code>DASHBOARD_TOKEN</code> (a read-only token,
                16+ characters) or <code>ADMIN_TOKEN</code> in this process's environment and restart it.</p>
                </section></main>
                """
        )
    }

    private static func document(title: String, head: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="robots" content="noindex">
        <title>\(escaped(title))</title>
        <style>\(style)</style>
        \(head)
        </head>
        <body>
        \(body)
        </body>
        </html>

        """
    }

    private static let style = """
        :root { color-scheme: light dark; --bg: #f4f5f7; --card: #fff; --text: #1d2330; --muted: #667085; --line: #e3e6eb;
          --good: #127a3a; --warn: #a15c00; --bad: #c0262d; --bar: #3b6fd8; }
        @media (prefers-color-scheme: dark) { :root { --bg: #12151b; --card: #1b2029; --text: #e6e8ec; --muted: #98a1b2; --line: #2c3340;
          --good: #4cc47a; --warn: #f0a43a; --bad: #ff6b6b; --bar: #6f9bff; } }
        * { box-sizing: border-box; }
        body { margin: 0; padding: 16px; background: var(--bg); color: var(--text); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
        header, main { max-width: 1200px; margin: 0 auto; }
        h1 { font-size: 1.5rem; margin: 0 0 4px; }
        h2 { font-size: 1.05rem; margin: 0 0 10px; }
        h3 { font-size: 0.95rem; margin: 0 0 4px; }
        p { margin: 4px 0; }
        code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
        main { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 540px), 1fr)); gap: 14px; margin-top: 14px; align-items: start; }
        section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; min-width: 0; }
        section.bad-edge { border-left: 5px solid var(--bad); }
        #pause, #alerts { grid-column: 1 / -1; }
        .muted { color: var(--muted); }
        .good { color: var(--good); } .warn { color: var(--warn); } .bad { color: var(--bad); }
        .pill { display: inline-block; white-space: nowrap; padding: 1px 9px; border-radius: 999px; font-size: 0.8rem; font-weight: 600; color: #fff; background: var(--muted); vertical-align: middle; }
        .pill.good { background: var(--good); } .pill.warn { background: var(--warn); } .pill.bad { background: var(--bad); }
        h1 .pill { font-size: 0.95rem; }
        .score { font-size: 1rem; font-weight: 400; color: var(--muted); }
        .banner { border-radius: 8px; padding: 10px 12px; margin: 6px 0; }
        .banner.bad { background: color-mix(in srgb, var(--bad) 12%, transparent); }
        .banner.warn { background: color-mix(in srgb, var(--warn) 15%, transparent); }
        .motivo { font-size: 1.1rem; font-weight: 600; overflow-wrap: anywhere; }
        .tiles { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
        .tile { background: var(--bg); border-radius: 8px; padding: 8px 10px; }
        .tile .value { display: block; font-size: 1.5rem; font-weight: 650; font-variant-numeric: tabular-nums; }
        .tile .label { color: var(--muted); font-size: 0.85rem; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
        th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; white-space: nowrap; }
        th { color: var(--muted); font-weight: 500; font-size: 0.85rem; }
        abbr { text-decoration: none; }
        td.text { white-space: normal; overflow-wrap: anywhere; min-width: 9em; }
        .chart { width: 100%; height: auto; display: block; margin-top: 6px; }
        .chart text { font-size: 11px; fill: var(--muted); }
        .chart .axis { stroke: var(--muted); stroke-width: 1; }
        .chart .grid { stroke: var(--line); stroke-dasharray: 3 3; }
        .chart .bars rect { fill: var(--bar); }
        .circuit + .circuit { margin-top: 12px; padding-top: 10px; border-top: 1px solid var(--line); }
        .transitions { margin: 4px 0 0; padding-left: 20px; font-size: 0.9rem; }
        .transitions li { margin: 3px 0; }
        .reason { color: var(--muted); overflow-wrap: anywhere; }
        form { margin-top: 12px; display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
        input { font: inherit; padding: 6px 8px; min-width: 16em; max-width: 100%; }
        button { font: inherit; padding: 6px 14px; }
        @media (max-width: 600px) {
          body { padding: 10px; }
          section { padding: 12px; }
          .tiles { grid-template-columns: repeat(2, 1fr); }
          .tile .value { font-size: 1.3rem; }
          th, td { padding: 4px 6px; }
          .chart text { font-size: 15px; }
        }
        """
}
