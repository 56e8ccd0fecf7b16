import Foundation

/// A strict reader of the Prometheus text exposition format (0.0.4) and of Fila's naming
/// rules (CONTRACTS §6), so the tests read `/metrics` as a scraper would and refuse what
/// Prometheus or the conventions would.
struct PrometheusText {
    struct Sample: Hashable {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    struct Family {
        var help: String?
        var type: String?
    }

    struct Invalid: Error, CustomStringConvertible {
        let line: Int
        let reason: String
        var description: String { "line \(line): \(reason)" }
    }

    /// Label names Fila may use: all low-cardinality (never a message id, a phone or a worker
    /// id). `chip` is a row of the chips table: a handful of numbers; `reason` a fixed code.
    static let allowedLabels: Set<String> = [
        "provider", "outcome", "status", "state", "store", "result", "job", "kind", "route", "method", "source", "le",
        "chip", "guardrail", "decision", "reason",
    ]

    private(set) var families: [String: Family] = [:]
    private(set) var samples: [Sample] = []

    init(_ text: String, prefix: String = "wa_") throws {
        guard text.isEmpty || text.hasSuffix("\n") else { throw Invalid(line: 0, reason: "the text does not end with a newline") }
        var seenSampleOf: Set<String> = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let number = index + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE" else { continue }
                let name = String(parts[2])
                guard Self.isMetricName(name) else { throw Invalid(line: number, reason: "bad metric name \(name)") }
                guard !seenSampleOf.contains(name) else { throw Invalid(line: number, reason: "\(parts[1]) of \(name) after its samples") }
                if parts[1] == "HELP" {
                    guard families[name]?.help == nil else { throw Invalid(line: number, reason: "second HELP for \(name)") }
                    guard parts.count == 4, !parts[3].isEmpty else { throw Invalid(line: number, reason: "empty HELP for \(name)") }
                    families[name, default: Family()].help = String(parts[3])
                } else {
                    guard families[name]?.type == nil else { throw Invalid(line: number, reason: "second TYPE for \(name)") }
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw Invalid(line: number, reason: "bad TYPE line for \(name)")
                    }
                    families[name, default: Family()].type = String(parts[3])
                }
                continue
            }
            let sample = try Self.sample(line, number: number)
            let family = try self.family(of: sample.name, line: number)
            seenSampleOf.insert(family)
            samples.append(sample)
        }
        try checkConventions(prefix: prefix)
    }

    /// The family a sample belongs to: its own name, or a histogram's for `_bucket`, `_sum`, `_count`.
    private func family(of name: String, line: Int) throws -> String {
        if families[name]?.type != nil, families[name]?.type != "histogram" { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if families[base]?.type == "histogram" { return base }
        }
        throw Invalid(line: line, reason: "sample \(name) has no TYPE line before it")
    }

    private func checkConventions(prefix: String) throws {
        for (name, family) in families {
            guard name.hasPrefix(prefix) else { throw Invalid(line: 0, reason: "\(name) lacks the app prefix \(prefix)") }
            guard family.help != nil else { throw Invalid(line: 0, reason: "\(name) has no HELP") }
            guard let type = family.type else { throw Invalid(line: 0, reason: "\(name) has no TYPE") }
            if (type == "counter") != name.hasSuffix("_total") {
                throw Invalid(line: 0, reason: type == "counter" ? "counter \(name) does not end in _total" : "\(type) \(name) ends in _total")
            }
            if type == "histogram" { try checkHistogram(name) }
        }
        for sample in samples {
            if let label = sample.labels.keys.first(where: { !Self.allowedLabels.contains($0) }) {
                throw Invalid(line: 0, reason: "\(sample.name) has label \(label), not one of the low-cardinality ones")
            }
        }
    }

    /// Per label set: increasing `le` buckets ending in +Inf, counts never decreasing, and the
    /// +Inf bucket equal to `_count`; a `_sum` for each.
    private func checkHistogram(_ name: String) throws {
        var buckets: [[String: String]: [(Double, Double)]] = [:]
        for sample in samples where sample.name == name + "_bucket" {
            guard let le = sample.labels["le"], let bound = Self.number(le) else { throw Invalid(line: 0, reason: "\(name)_bucket without a numeric le") }
            var labels = sample.labels
            labels["le"] = nil
            buckets[labels, default: []].append((bound, sample.value))
        }
        guard !buckets.isEmpty else { throw Invalid(line: 0, reason: "histogram \(name) has no buckets") }
        for (labels, series) in buckets {
            guard series.last?.0 == .infinity else { throw Invalid(line: 0, reason: "\(name)\(labels) does not end with le=\"+Inf\"") }
            for (previous, next) in zip(series, series.dropFirst()) where !(previous.0 < next.0 && previous.1 <= next.1) {
                throw Invalid(line: 0, reason: "\(name)\(labels) buckets are not cumulative in increasing le")
            }
            guard let count = value(name + "_count", labels), value(name + "_sum", labels) != nil else {
                throw Invalid(line: 0, reason: "\(name)\(labels) lacks _sum or _count")
            }
            guard count == series.last?.1 else { throw Invalid(line: 0, reason: "\(name)\(labels) +Inf bucket differs from _count") }
        }
    }

    /// The value of the sample with exactly these labels, if any.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Every sample of `name`, whatever its labels.
    func all(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    static func isMetricName(_ name: some StringProtocol) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || first == ":" || CharacterSet.letters.contains(first) && first.isASCII else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0 == ":" || CharacterSet.alphanumerics.contains($0)) }
    }

    static func isLabelName(_ name: some StringProtocol) -> Bool {
        isMetricName(name) && !name.contains(":")
    }

    static func number(_ text: some StringProtocol) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: return Double(text)
        }
    }

    /// `name{label="value",…} value`, with only `\\`, `\"` and `\n` escapes in values.
    private static func sample(_ line: Substring, number: Int) throws -> Sample {
        var rest = line[...]
        let name = rest.prefix { $0 != "{" && $0 != " " }
        guard isMetricName(name) else { throw Invalid(line: number, reason: "bad metric name in \(line)") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let labelName = rest.prefix { $0 != "=" }
                guard isLabelName(labelName), labels[String(labelName)] == nil else { throw Invalid(line: number, reason: "bad or repeated label name in \(line)") }
                rest = rest.dropFirst(labelName.count)
                guard rest.hasPrefix("=\"") else { throw Invalid(line: number, reason: "label without =\" in \(line)") }
                rest = rest.dropFirst(2)
                var value = ""
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "\"" { closed = true; break }
                    if character == "\\" {
                        switch rest.first {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw Invalid(line: number, reason: "bad escape in \(line)")
                        }
                        rest = rest.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                guard closed else { throw Invalid(line: number, reason: "unterminated label value in \(line)") }
                labels[String(labelName)] = value
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" {
                    throw Invalid(line: number, reason: "labels not separated by commas in \(line)")
                }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw Invalid(line: number, reason: "no space before the value in \(line)") }
        let fields = rest.dropFirst().split(separator: " ")
        guard (1...2).contains(fields.count), let value = Self.number(fields[0]), fields.count == 1 || Int64(fields[1]) != nil else {
            throw Invalid(line: number, reason: "bad value in \(line)")
        }
        return Sample(name: String(name), labels: labels, value: value)
    }
}
