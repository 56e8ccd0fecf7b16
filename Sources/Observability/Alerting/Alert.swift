import Primitives

/// One instance of an alert condition, as an evaluator found it: what a person reads in
/// Slack and what `alert_state` and `alert_events` keep.
///
/// Identity is `rule` and `key` (as Alertmanager's label set); `title`, `text` and `fields`
/// are annotations that may change between evaluations without making a new alert.
///
/// ```swift
/// let alert = Alert(
///     rule: "fila_acumulada",
///     title: "Fila acumulada: 120 mensagens atrasadas",
///     text: "Há 120 mensagens pendentes vencidas há mais de 30 minutos.",
///     fields: [.init("Mensagens atrasadas", "120"), .init("Mais antiga", "47 min")]
/// )
/// ```
public struct Alert: Sendable, Hashable {
    /// A name and value shown side by side in the notification.
    public struct Field: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The rule's name as ops know it (`fila_acumulada`): lowercase letters, digits, `_`.
    public var rule: String
    /// Which instance of the rule (`""` when it has one; a job name, a circuit…).
    public var key: String
    public var title: String
    public var text: String
    public var fields: [Field]
    /// Numbers for people who query `alert_events.payload`, beside the fields.
    public var details: [String: JSONValue]

    public init(rule: String, key: String = "", title: String, text: String, fields: [Field] = [], details: [String: JSONValue] = [:]) {
        self.rule = rule
        self.key = key
        self.title = title
        self.text = text
        self.fields = fields
        self.details = details
    }

    /// What `alert_state.payload` and `alert_events.payload` hold.
    var payload: JSONValue {
        [
            "fields": .array(fields.map { ["name": .string($0.name), "value": .string($0.value)] }),
            "details": .object(details),
        ]
    }

    /// Whether `rule` can be a rule name (the `alert_state.rule` CHECK).
    public static func isValidRule(_ rule: String) -> Bool {
        !rule.isEmpty && rule.utf8.count <= 100
            && rule.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }
}
