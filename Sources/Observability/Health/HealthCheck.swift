#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Primitives

/// How a check, and a whole report, came out (IETF draft-inadarei-api-health-check-06).
/// Ordered from best to worst, so the worst of several is their `max()`.
public enum HealthStatus: String, Sendable, Codable, Hashable, Comparable, CaseIterable {
    case pass, warn, fail

    public static func < (lhs: HealthStatus, rhs: HealthStatus) -> Bool {
        lhs.rank < rhs.rank
    }

    private var rank: Int {
        switch self {
        case .pass: 0
        case .warn: 1
        case .fail: 2
        }
    }
}

/// The draft's `componentType`: what kind of thing a check watches.
public enum HealthComponentType: String, Sendable, Codable, Hashable {
    case component, datastore, system
}

/// What one check saw of one node (a circuit, a process, the database). Only states and
/// counts belong here: health bodies are public.
public struct HealthObservation: Sendable, Hashable {
    public var status: HealthStatus
    /// Which node this is when a check reports several (a circuit's name, a process's id).
    public var componentID: String?
    public var observedValue: JSONValue?
    public var observedUnit: String?
    /// Why the status is not `pass`, in words a person acts on.
    public var output: String?
    /// Extra fields, written beside the draft's own (the draft allows custom keys).
    public var details: [String: JSONValue]

    public init(
        status: HealthStatus,
        componentID: String? = nil,
        observedValue: JSONValue? = nil,
        observedUnit: String? = nil,
        output: String? = nil,
        details: [String: JSONValue] = [:]
    ) {
        self.status = status
        self.componentID = componentID
        self.observedValue = observedValue
        self.observedUnit = observedUnit
        self.output = output
        self.details = details
    }
}

/// One named check: a component, a measurement and the closure that looks.
///
/// The closure may throw, or never return: the runner reports either as `fail` without the
/// error's text (health bodies are public), within `timeLimit`.
///
/// ```swift
/// let ping = HealthCheck(component: "postgres", measurement: "responseTime", componentType: .datastore) {
///     let elapsed = try await measurePing()
///     return HealthObservation(status: .pass, observedValue: .integer(elapsed), observedUnit: "ms")
/// }
/// ```
public struct HealthCheck: Sendable {
    public let component: String
    public let measurement: String
    public let componentType: HealthComponentType
    public let timeLimit: Duration
    let observe: @Sendable () async throws -> [HealthObservation]

    /// The draft's `checks` key, `component:measurement`.
    public var key: String { "\(component):\(measurement)" }

    /// The default time limit leaves room inside the 2 s every health endpoint answers in.
    public static let defaultTimeLimit: Duration = .milliseconds(1500)

    /// A check reporting one node.
    public init(
        component: String,
        measurement: String,
        componentType: HealthComponentType = .component,
        timeLimit: Duration = HealthCheck.defaultTimeLimit,
        _ observe: @escaping @Sendable () async throws -> HealthObservation
    ) {
        self.init(component: component, measurement: measurement, componentType: componentType, timeLimit: timeLimit, nodes: { [try await observe()] })
    }

    /// A check reporting several nodes (each circuit, each process). None is a `pass`
    /// with nothing to show.
    public init(
        component: String,
        measurement: String,
        componentType: HealthComponentType = .component,
        timeLimit: Duration = HealthCheck.defaultTimeLimit,
        nodes observe: @escaping @Sendable () async throws -> [HealthObservation]
    ) {
        precondition(!component.contains(":") && !measurement.contains(":"), "the draft forbids colons in check names")
        self.component = component
        self.measurement = measurement
        self.componentType = componentType
        self.timeLimit = timeLimit
        self.observe = observe
    }

    /// The same check under another time limit.
    public func limited(to timeLimit: Duration) -> HealthCheck {
        HealthCheck(component: component, measurement: measurement, componentType: componentType, timeLimit: timeLimit, nodes: observe)
    }
}
