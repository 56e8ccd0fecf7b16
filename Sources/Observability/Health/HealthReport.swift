#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Primitives

/// One element of a check's array in the body: an observation with the check's type and
/// the time it was made.
public struct HealthEntry: Sendable, Hashable, Encodable {
    public let observation: HealthObservation
    public let componentType: HealthComponentType
    public let time: Date

    public var status: HealthStatus { observation.status }

    /// The draft's fields, then the custom ones; a custom key never replaces a draft field.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        let reserved: Set = ["componentId", "componentType", "observedValue", "observedUnit", "status", "time", "output"]
        for (key, value) in observation.details where !reserved.contains(key) {
            try container.encode(value, forKey: Key(key))
        }
        try container.encodeIfPresent(observation.componentID, forKey: Key("componentId"))
        try container.encode(componentType, forKey: Key("componentType"))
        try container.encodeIfPresent(observation.observedValue, forKey: Key("observedValue"))
        try container.encodeIfPresent(observation.observedUnit, forKey: Key("observedUnit"))
        try container.encode(observation.status, forKey: Key("status"))
        try container.encode(time, forKey: Key("time"))
        try container.encodeIfPresent(observation.output, forKey: Key("output"))
    }
}

/// The `application/health+json` body: the worst status of every check, and the checks by
/// `component:measurement`.
public struct HealthReport: Sendable, Encodable {
    public let status: HealthStatus
    public let checks: [String: [HealthEntry]]
    /// Which checks did not pass, for a person reading the body; omitted on pass as the
    /// draft asks.
    public var output: String? {
        guard status != .pass else { return nil }
        let failing = checks.filter { $0.value.contains { $0.status != .pass } }.keys.sorted()
        return failing.isEmpty ? nil : "not passing: " + failing.joined(separator: ", ")
    }
    /// Anything else the endpoint wants beside `status` and `checks` (a score, a version).
    public var extra: [String: JSONValue]

    public static let contentType = "application/health+json"

    public init(checks: [String: [HealthEntry]], extra: [String: JSONValue] = [:]) {
        self.checks = checks
        self.status = checks.values.joined().map(\.status).max() ?? .pass
        self.extra = extra
    }

    /// 503 on fail, 200 on pass and warn: the draft's rule (warn is still 2xx).
    public var httpStatusCode: Int { status == .fail ? 503 : 200 }

    /// The worst status among the checks of `component`; nil when there are none.
    public func status(of component: String) -> HealthStatus? {
        checks.filter { $0.key.split(separator: ":").first.map(String.init) == component }
            .values.joined().map(\.status).max()
    }

    /// This report merged with `other`'s checks (the same key in both keeps `other`'s).
    public func merging(_ other: HealthReport) -> HealthReport {
        HealthReport(checks: checks.merging(other.checks) { $1 }, extra: extra.merging(other.extra) { $1 })
    }

    /// The Kubernetes text form (`/readyz`): `ok` when passing, one `[+]name ok` line per
    /// check with `verbose`, and always the verbose form on failure, with the reason
    /// withheld since the endpoint is public. A `warn` passes: it must not stop traffic.
    /// `passingName` is a line shown for a report with no checks (liveness's `ping`).
    /// `excluded` are the checks `?exclude=` skipped (`[+]name excluded: ok`), `unmatched`
    /// the exclusions that named no check (one `warn:` line).
    public func kubernetesText(endpoint: String, verbose: Bool, passingName: String? = nil, excluded: [String] = [], unmatched: [String] = []) -> String {
        let failed = status == .fail
        guard verbose || failed else { return "ok" }
        var lines: [String] = []
        if checks.isEmpty, excluded.isEmpty, let passingName { lines.append("[+]\(passingName) ok") }
        var named: [String: Bool] = [:]
        for (key, entries) in checks {
            let name = key.split(separator: ":").first.map(String.init) ?? key
            named[name] = (named[name] ?? false) || entries.contains { $0.status == .fail }
        }
        for name in Set(named.keys).union(excluded).sorted() {
            if let checkFailed = named[name] {
                lines.append(checkFailed ? "[-]\(name) failed: reason withheld" : "[+]\(name) ok")
            } else {
                lines.append("[+]\(name) excluded: ok")
            }
        }
        if !unmatched.isEmpty {
            lines.append("warn: some health checks cannot be excluded: no matches for " + unmatched.map { "\"\($0)\"" }.joined(separator: ","))
        }
        lines.append("\(endpoint) check \(failed ? "failed" : "passed")")
        return lines.joined(separator: "\n") + "\n"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (key, value) in extra where !["status", "checks", "output"].contains(key) {
            try container.encode(value, forKey: Key(key))
        }
        try container.encode(status, forKey: Key("status"))
        try container.encode(checks, forKey: Key("checks"))
        try container.encodeIfPresent(output, forKey: Key("output"))
    }
}

/// A JSON object key chosen at run time (a check's custom fields, a report's extras).
private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
