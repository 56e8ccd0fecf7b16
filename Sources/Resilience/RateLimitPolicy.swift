import Database
import Foundation
import Logging
import Primitives

/// How much each doctor may receive per calendar day (seed T04.1, T04.2).
///
/// Every value can be changed with psql in `app_settings` and takes effect within a
/// minute (see the README's settings table):
///
/// | key | default |
/// |---|---|
/// | `rate_limit.daily_budget` | `3` |
/// | `rate_limit.weights` | `{"campanha": 2, "followup": 1, "sistema": 1, "resposta": 0}` |
/// | `rate_limit.time_zone` | `"America/Sao_Paulo"` |
/// | `rate_limit.deferral_spread_seconds` | `600` |
public struct RateLimitPolicy: Sendable, Hashable {
    /// The weight a doctor may receive per day.
    public var dailyBudget: Int
    /// Weight per message kind; a kind not listed weighs `defaultWeight`.
    public var weights: [String: Int]
    public var defaultWeight: Int
    /// The zone whose calendar day is the window.
    public var timeZone: String
    /// Messages over budget are deferred to the next window's start plus a random delay of
    /// up to this much, so a day's backlog does not all go out at midnight (seed T04.3).
    public var deferralSpread: Duration

    public init(
        dailyBudget: Int = 3,
        weights: [String: Int] = ["campanha": 2, "followup": 1, "sistema": 1, "resposta": 0],
        defaultWeight: Int = 1,
        timeZone: String = "America/Sao_Paulo",
        deferralSpread: Duration = .seconds(600)
    ) {
        self.dailyBudget = max(0, dailyBudget)
        self.weights = weights.mapValues { max(0, $0) }
        self.defaultWeight = max(0, defaultWeight)
        self.timeZone = timeZone
        self.deferralSpread = max(.zero, deferralSpread)
    }

    public func weight(for kind: String) -> Int {
        weights[kind] ?? defaultWeight
    }

    public static let budgetKey = "rate_limit.daily_budget"
    public static let weightsKey = "rate_limit.weights"
    public static let timeZoneKey = "rate_limit.time_zone"
    public static let spreadKey = "rate_limit.deferral_spread_seconds"

    /// This policy with whatever `settings` override. A value of the wrong shape is ignored
    /// (and reported through `problems`), never half-applied.
    public func applying(_ settings: [String: JSONValue]) -> (policy: RateLimitPolicy, problems: [String]) {
        var policy = self
        var problems: [String] = []
        if let value = settings[Self.budgetKey] {
            if let budget = value.integerValue, (0...1_000_000).contains(budget) {
                policy.dailyBudget = budget
            } else {
                problems.append("\(Self.budgetKey) must be a whole number, 0-1000000")
            }
        }
        if let value = settings[Self.weightsKey] {
            if case .object(let object) = value {
                var weights = policy.weights
                var valid = true
                for (kind, weight) in object {
                    guard let weight = weight.integerValue, (0...1_000_000).contains(weight) else { valid = false; break }
                    weights[kind] = weight
                }
                if valid { policy.weights = weights } else { problems.append("\(Self.weightsKey) must map kinds to whole numbers, 0-1000000") }
            } else {
                problems.append("\(Self.weightsKey) must be a JSON object")
            }
        }
        if let value = settings[Self.timeZoneKey] {
            if let zone = value.stringValue, TimeZone(identifier: zone) != nil {
                policy.timeZone = zone
            } else {
                problems.append("\(Self.timeZoneKey) must be a time zone name such as \"America/Sao_Paulo\"")
            }
        }
        if let value = settings[Self.spreadKey] {
            if let seconds = value.integerValue, (0...86_400).contains(seconds) {
                policy.deferralSpread = .seconds(seconds)
            } else {
                problems.append("\(Self.spreadKey) must be a whole number of seconds, 0-86400")
            }
        }
        return (policy, problems)
    }
}

/// The window a check falls in: a calendar day in the policy's zone.
public struct RateWindow: Sendable, Hashable {
    /// `2026-11-25`.
    public let day: String
    /// When the next window starts.
    public let nextStart: Date

    /// The window containing `date` in `timeZone` (for the Redis store; Postgres computes
    /// its own from `now()`).
    public static func containing(_ date: Date, timeZone identifier: String) -> RateWindow? {
        guard let zone = TimeZone(identifier: identifier) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let components = calendar.dateComponents([.year, .month, .day], from: date)
        guard let start = calendar.date(from: components),
              let next = calendar.date(byAdding: .day, value: 1, to: start),
              let year = components.year, let month = components.month, let day = components.day
        else { return nil }
        let text = String(format: "%04d-%02d-%02d", year, month, day)
        return RateWindow(day: text, nextStart: next)
    }
}
