#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Primitives

/// Decides, for one alert condition, whether an evaluation notifies anyone: the first
/// firing does, a condition still firing does again only once its cooldown has passed, and
/// a cleared one sends one "resolved" once it has stayed clear for `resolveAfter` (so a
/// flapping condition is one episode with one notification, as Prometheus's
/// `keep_firing_for`). Pure: it takes the instant and the stored state, so
/// the rules are tested without a clock; `AlertStore` does the I/O under row locks.
public enum AlertStateMachine {
    /// What `alert_state` holds for a condition (a condition never seen is `.init()`).
    public struct State: Sendable, Hashable {
        public var firing: Bool
        public var lastNotifiedAt: Date?
        /// The last evaluation that found it firing.
        public var lastSeenAt: Date?

        public init(firing: Bool = false, lastNotifiedAt: Date? = nil, lastSeenAt: Date? = nil) {
            self.firing = firing
            self.lastNotifiedAt = lastNotifiedAt
            self.lastSeenAt = lastSeenAt
        }
    }

    /// What an evaluation does to a condition's row, and whether it notifies.
    public enum Action: String, Sendable, Hashable {
        /// It starts firing: notify.
        case fire
        /// Still firing and the cooldown has passed: notify again.
        case renotify
        /// Still firing within the cooldown: record it, stay quiet.
        case stillFiring
        /// It cleared, and has stayed clear for `resolveAfter`: one "resolved" notification.
        case resolve
        /// Not found firing, but it was seen firing less than `resolveAfter` ago: it stays
        /// firing, quietly (if it comes back, the episode goes on without a new notification).
        case clearing
        /// Not firing before or now.
        case none

        /// Whether the action produces an `alert_events` row.
        public var notifies: Bool { self == .fire || self == .renotify || self == .resolve }
    }

    /// The action for a condition in `state` that an evaluation at `now` found `firing`
    /// (or not), re-notifying a still-firing one after `cooldown`, resolving a cleared one
    /// once it was last seen firing `resolveAfter` ago.
    public static func decide(_ state: State, firing: Bool, now: Date, cooldown: Duration, resolveAfter: Duration = .zero) -> Action {
        switch (state.firing, firing) {
        case (false, true):
            return .fire
        case (true, true):
            guard let last = state.lastNotifiedAt else { return .renotify }
            let elapsed = now.timeIntervalSince(last)
            return elapsed >= cooldown.seconds ? .renotify : .stillFiring
        case (true, false):
            if let seen = state.lastSeenAt, now.timeIntervalSince(seen) < resolveAfter.seconds { return .clearing }
            return .resolve
        case (false, false):
            return .none
        }
    }
}
