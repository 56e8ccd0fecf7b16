/// A 0–100 health score with the seed's bands (T03.4): healthy at 80 and above, degraded
/// at 50 and above, unhealthy below.
///
/// A check's status scores 100 (pass), 50 (warn) or 0 (fail); a component is the mean of
/// its parts; the overall score is the mean of the components, but no more than 49 while
/// any component is unhealthy, so one dead part (no worker at all) can never hide behind
/// five healthy ones as a "healthy" 83.
public struct HealthScore: Sendable, Hashable, Codable, Comparable {
    public enum Band: String, Sendable, Hashable, Codable {
        case healthy, degraded, unhealthy
    }

    /// 0...100.
    public let value: Int

    public init(_ value: Int) {
        self.value = min(100, max(0, value))
    }

    public var band: Band {
        value >= 80 ? .healthy : value >= 50 ? .degraded : .unhealthy
    }

    public init(_ status: HealthStatus) {
        switch status {
        case .pass: self.init(100)
        case .warn: self.init(50)
        case .fail: self.init(0)
        }
    }

    /// The mean of `parts`, rounded; 100 when there are none (nothing to be unhealthy).
    public static func mean(_ parts: [HealthScore]) -> HealthScore {
        guard !parts.isEmpty else { return HealthScore(100) }
        let sum = parts.reduce(0) { $0 + $1.value }
        return HealthScore(Int((Double(sum) / Double(parts.count)).rounded()))
    }

    /// The mean of `components`, capped at 49 while any of them is unhealthy.
    public static func overall(_ components: [HealthScore]) -> HealthScore {
        let mean = mean(components)
        guard components.contains(where: { $0.band == .unhealthy }) else { return mean }
        return HealthScore(min(mean.value, 49))
    }

    public static func < (lhs: HealthScore, rhs: HealthScore) -> Bool { lhs.value < rhs.value }
}
