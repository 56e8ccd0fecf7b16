import CoreMetrics
import Synchronization

/// A family of swift-metrics handles made once per label set and cached, so emitting on a
/// hot path (every send) is a dictionary look-up, not a registry round.
public final class MetricFamily<Handle: Sendable>: Sendable {
    private let make: @Sendable ([(String, String)]) -> Handle
    private let handles = Mutex<[[String]: Handle]>([:])
    public let labelNames: [String]

    public init(labels labelNames: [String], make: @escaping @Sendable ([(String, String)]) -> Handle) {
        self.labelNames = labelNames
        self.make = make
    }

    /// The handle for these label values, in the order of `labels`.
    public func callAsFunction(_ values: String...) -> Handle {
        precondition(values.count == labelNames.count, "expected labels \(labelNames)")
        if let handle = handles.withLock({ $0[values] }) { return handle }
        let handle = make(Array(zip(labelNames, values)))
        return handles.withLock { cache in
            if let existing = cache[values] { return existing }
            cache[values] = handle
            return handle
        }
    }
}

extension MetricFamily where Handle == Counter {
    public static func counter(_ descriptor: MetricDescriptor, factory: any MetricsFactory) -> MetricFamily<Counter> {
        MetricFamily(labels: descriptor.labels) { Counter(label: descriptor.name, dimensions: $0, factory: factory) }
    }
}

extension MetricFamily where Handle == CoreMetrics.Timer {
    /// A histogram of durations (seconds in the exposition).
    public static func histogram(_ descriptor: MetricDescriptor, factory: any MetricsFactory) -> MetricFamily<CoreMetrics.Timer> {
        MetricFamily(labels: descriptor.labels) { CoreMetrics.Timer(label: descriptor.name, dimensions: $0, preferredDisplayUnit: .seconds, factory: factory) }
    }
}

extension MetricFamily where Handle == Gauge {
    public static func gauge(_ descriptor: MetricDescriptor, factory: any MetricsFactory) -> MetricFamily<Gauge> {
        MetricFamily(labels: descriptor.labels) { Gauge(label: descriptor.name, dimensions: $0, factory: factory) }
    }
}
