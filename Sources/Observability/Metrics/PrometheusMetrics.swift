import CoreMetrics
import Logging
import Prometheus
import Synchronization

/// One process's metrics: a swift-metrics factory backed by its own Prometheus registry, the
/// gauges read at scrape time, and the exposition in Prometheus text (format 0.0.4).
///
/// Components emit through swift-metrics with ``factory``; the `fila` process also
/// bootstraps it as the global factory once. Tests make one per test, so each counts alone.
///
/// ```swift
/// let metrics = PrometheusMetrics(descriptors: QueueGauges.descriptors + …)
/// let counter = Counter(label: "wa_messages_sent_total", dimensions: [("provider", "evolution")], factory: metrics.factory)
/// let text = await metrics.exposition(logger: logger)
/// ```
public final class PrometheusMetrics: Sendable {
    /// `GET /metrics`'s content type.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public let registry: PrometheusCollectorRegistry
    public let factory: any MetricsFactory
    /// Every family this process may expose, by name: their help lines, and the types and
    /// labels of sampled gauges.
    public let descriptors: [String: MetricDescriptor]
    private let sources = Mutex<[Source]>([])

    private enum Source: Sendable {
        case sampled(SampledMetrics)
        case live(@Sendable () -> [MetricSample])
    }

    /// - Parameter durationBuckets: histogram buckets (in seconds) per metric name; others get
    ///   swift-prometheus's defaults (5 ms – 10 s).
    public init(descriptors: [MetricDescriptor], durationBuckets: [String: [Duration]] = [:]) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = durationBuckets
        self.registry = registry
        self.factory = factory
        var byName: [String: MetricDescriptor] = [:]
        for descriptor in descriptors + Self.ownDescriptors {
            byName[descriptor.name] = descriptor
        }
        self.descriptors = byName
    }

    /// Adds gauges read from a slow source (the database) at scrape time, cached.
    public func add(_ sampled: SampledMetrics) {
        sources.withLock { $0.append(.sampled(sampled)) }
    }

    /// Adds gauges read from in-process state at scrape time (a breaker's state).
    public func addLive(_ read: @escaping @Sendable () -> [MetricSample]) {
        sources.withLock { $0.append(.live(read)) }
    }

    static let sampleOK = MetricDescriptor(
        "wa_metrics_sample_ok", .gauge, labels: ["source"],
        help: "1 when the last read of the gauges sampled from this source (postgres) worked, 0 when it failed or timed out."
    )
    static let sampleAge = MetricDescriptor(
        "wa_metrics_sample_age_seconds", .gauge, labels: ["source"],
        help: "Age of the values of the gauges sampled from this source (cached a few seconds)."
    )
    static let ownDescriptors = [sampleOK, sampleAge]

    /// The whole exposition: the counters and histograms emitted through swift-metrics, then
    /// the sampled and live gauges, read now (each source under its time limit).
    public func exposition(logger: Logger) async -> String {
        var samples: [MetricSample] = []
        for source in sources.withLock({ $0 }) {
            switch source {
            case .live(let read):
                samples += read()
            case .sampled(let sampled):
                let reading = await sampled.current(logger: logger)
                samples += reading.samples
                samples.append(MetricSample(Self.sampleOK.name, labels: ["source": sampled.source], value: reading.ok ? 1 : 0))
                if let age = reading.age {
                    samples.append(MetricSample(Self.sampleAge.name, labels: ["source": sampled.source], value: age.seconds))
                }
            }
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        var text = withHelpLines(String(decoding: buffer, as: UTF8.self))
        text += render(samples)
        return text
    }

    /// The registry writes `# HELP` only for help given at creation, which swift-metrics never
    /// passes: add each known family's line before its `# TYPE`.
    private func withHelpLines(_ text: String) -> String {
        var output = ""
        output.reserveCapacity(text.utf8.count + 64 * descriptors.count)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst("# TYPE ".count).split(separator: " ").first.map(String.init) ?? ""
                if let descriptor = descriptors[name] {
                    output += "# HELP \(name) \(Self.escapeHelp(descriptor.help))\n"
                }
            }
            output += line
            output += "\n"
        }
        return output
    }

    /// Sampled and live gauges, grouped by family, each with its HELP and TYPE lines.
    private func render(_ samples: [MetricSample]) -> String {
        var order: [String] = []
        var byName: [String: [MetricSample]] = [:]
        for sample in samples {
            if byName[sample.name] == nil { order.append(sample.name) }
            byName[sample.name, default: []].append(sample)
        }
        var output = ""
        for name in order {
            let help = descriptors[name]?.help ?? ""
            if !help.isEmpty { output += "# HELP \(name) \(Self.escapeHelp(help))\n" }
            output += "# TYPE \(name) \(descriptors[name]?.kind.rawValue ?? "gauge")\n"
            for sample in byName[name] ?? [] {
                output += name
                if !sample.labels.isEmpty {
                    let pairs = sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Self.escapeLabel($0.value))\"" }
                    output += "{" + pairs.joined(separator: ",") + "}"
                }
                output += " \(Self.format(sample.value))\n"
            }
        }
        return output
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    static func escapeHelp(_ text: String) -> String {
        text.replacingAll("\\", with: "\\\\").replacingAll("\n", with: "\\n")
    }

    static func escapeLabel(_ text: String) -> String {
        text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n")
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        guard contains(target) else { return self }
        var result = ""
        for character in self {
            if character == target { result += replacement } else { result.append(character) }
        }
        return result
    }
}
