import Database
import Logging
import PostgresNIO
import Primitives

/// One rule's thresholds from `app_settings` (`alert.<rule>.<name>`), read afresh at every
/// evaluation so a change made with psql applies at the next one. A missing value, or one
/// that is not a number in its allowed range, gives the default written in code.
public struct AlertRuleSettings: Sendable {
    public let rule: String
    public let values: [String: JSONValue]

    public init(rule: String, values: [String: JSONValue]) {
        self.rule = rule
        self.values = values
    }

    /// The integer `alert.<rule>.<name>`, or `defaultValue` when unset or outside `range`.
    public func integer(_ name: String, default defaultValue: Int, in range: ClosedRange<Int>) -> Int {
        guard let value = values[name]?.integerValue, range.contains(value) else { return defaultValue }
        return value
    }

    /// The seconds in `alert.<rule>.<name>`, or `defaultValue` (1 s to 7 days).
    public func duration(_ name: String, default defaultValue: Duration) -> Duration {
        let seconds = integer(name, default: -1, in: 1...(7 * 86_400))
        return seconds < 0 ? defaultValue : .seconds(seconds)
    }

    /// `alert.<rule>.cooldown_seconds`: how long a condition that keeps firing stays quiet
    /// after a notification.
    public func cooldown(default defaultValue: Duration) -> Duration {
        duration("cooldown_seconds", default: defaultValue)
    }

    /// `alert.<rule>.resolve_after_seconds` (0 to 1 day): how long a condition must stay
    /// clear before it is resolved; one that comes back sooner is the same episode, and
    /// nobody is told twice (flap suppression).
    public func resolveAfter(default defaultValue: Duration = AlertRuleSettings.defaultResolveAfter) -> Duration {
        let seconds = integer("resolve_after_seconds", default: -1, in: 0...86_400)
        return seconds < 0 ? defaultValue : .seconds(seconds)
    }

    /// Two evaluations of the every-minute rules.
    public static let defaultResolveAfter = Duration.seconds(120)
}

extension AlertStore {
    /// The `alert.<rule>.*` settings, read now.
    public func settings(for rule: String, logger: Logger) async throws -> AlertRuleSettings {
        let prefix = "alert.\(rule)."
        var values: [String: JSONValue] = [:]
        do {
            let rows = try await client.query(
                "SELECT key, value::text FROM app_settings WHERE starts_with(key, \(prefix))",
                logger: logger
            )
            for try await (key, text) in rows.decode((String, String).self) {
                values[String(key.dropFirst(prefix.count))] = JSONValue(parsing: text)
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "reading the settings of alert \(rule)")
        }
        return AlertRuleSettings(rule: rule, values: values)
    }
}
