import Primitives

/// Which guardrails refuse what (seed T06.1). Every value can be changed with psql in
/// `app_settings` and takes effect within a minute:
///
/// | key | default |
/// |---|---|
/// | `guardrail.contact_cap_7d.enabled` | `true` |
/// | `guardrail.contact_cap_7d.limit` | `2` |
///
/// The cap's default is deliberately conservative: two campaign messages per doctor per
/// rolling 7 days. A blocked doctor is refused whatever these say.
public struct GuardrailPolicy: Sendable, Hashable {
    /// Whether `contact_cap_7d` refuses campaign messages over `contactCapLimit`. Switched
    /// off, campaign contacts are still counted, so switching it on again is exact at once.
    public var contactCapEnabled: Bool
    /// Campaign (`tipo = 'campanha'`) messages a doctor may receive per rolling 7 days.
    public var contactCapLimit: Int

    public init(contactCapEnabled: Bool = true, contactCapLimit: Int = 2) {
        self.contactCapEnabled = contactCapEnabled
        self.contactCapLimit = max(0, contactCapLimit)
    }

    public static let capEnabledKey = "guardrail.contact_cap_7d.enabled"
    public static let capLimitKey = "guardrail.contact_cap_7d.limit"

    /// This policy with whatever `settings` override. A value of the wrong shape is ignored
    /// (and reported through `problems`), never half-applied.
    public func applying(_ settings: [String: JSONValue]) -> (policy: GuardrailPolicy, problems: [String]) {
        var policy = self
        var problems: [String] = []
        if let value = settings[Self.capEnabledKey] {
            if case .bool(let enabled) = value {
                policy.contactCapEnabled = enabled
            } else {
                problems.append("\(Self.capEnabledKey) must be true or false")
            }
        }
        if let value = settings[Self.capLimitKey] {
            if let limit = value.integerValue, (0...1_000).contains(limit) {
                policy.contactCapLimit = limit
            } else {
                problems.append("\(Self.capLimitKey) must be a whole number, 0-1000")
            }
        }
        return (policy, problems)
    }
}
