/// What one metric family is: its name, type, help text and label names. Each module
/// declares the families it emits next to the code that emits them; the exposition writes
/// the help text as `# HELP`, and the README lists them.
///
/// ```swift
/// static let sent = MetricDescriptor(
///     "wa_messages_sent_total", .counter, labels: ["provider", "outcome"],
///     help: "Provider calls by provider and outcome."
/// )
/// ```
public struct MetricDescriptor: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case counter, gauge, histogram
    }

    public let name: String
    public let kind: Kind
    public let labels: [String]
    public let help: String

    public init(_ name: String, _ kind: Kind, labels: [String] = [], help: String) {
        precondition(MetricDescriptor.isValidName(name), "\(name) is not a Prometheus metric name")
        precondition((kind == .counter) == name.hasSuffix("_total"), "\(name): counters, and only counters, end in _total")
        self.name = name
        self.kind = kind
        self.labels = labels
        self.help = help
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the exposition format's metric names.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !(("0"..."9").contains(first)) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || $0 == ":" || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
    }
}

/// One value read at scrape time (from the database, or from a component's state).
public struct MetricSample: Sendable, Hashable {
    public let name: String
    public let labels: [String: String]
    public let value: Double

    public init(_ name: String, labels: [String: String] = [:], value: Double) {
        self.name = name
        self.labels = labels
        self.value = value
    }
}
