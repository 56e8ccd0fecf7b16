import Logging

/// A condition that every `fila` process evaluates on a timer (`AlertEvaluator`), unlike the
/// checks the scheduler runs as jobs: the rules that must keep working when the scheduler is
/// what died, or when its job loop hangs. Each module builds its own rules from what it
/// watches; the evaluator only runs them and reports what they find to the `AlertStore`.
///
/// ```swift
/// let rule = AlertRule(name: "scheduler_sem_heartbeat", cooldown: .seconds(1800)) { settings, logger in
///     let after = settings.integer("after_seconds", default: 120, in: 30...86_400)
///     return try await noLiveScheduler(for: after) ? [alert] : []
/// }
/// ```
public struct AlertRule: Sendable {
    /// The rule's name as ops know it (`alert_state.rule`).
    public let name: String
    /// The re-notification cooldown when `alert.<name>.cooldown_seconds` is unset.
    public let cooldown: Duration
    /// The instances firing now, given the rule's `alert.<name>.*` settings read afresh;
    /// nil when the rule cannot judge now (another condition inhibits it), which leaves its
    /// state as it is: nothing fires, nothing resolves.
    public let evaluate: @Sendable (AlertRuleSettings, Logger) async throws -> [Alert]?

    public init(name: String, cooldown: Duration, evaluate: @escaping @Sendable (AlertRuleSettings, Logger) async throws -> [Alert]?) {
        precondition(Alert.isValidRule(name), "alert rule names are lowercase letters, digits and _")
        self.name = name
        self.cooldown = cooldown
        self.evaluate = evaluate
    }
}
