/// A URL that is its own credential: a Slack incoming webhook (anyone holding it can post),
/// a dead man's switch ping URL (anyone holding it can keep the switch from firing). Its
/// `description` hides everything after the host: printing or logging one by mistake leaks
/// nothing.
public struct SecretURL: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The whole URL, for the one place that sends to it.
    let value: String

    /// Nil unless `text` is an http:// or https:// URL with a host and a path.
    public init?(_ text: String) {
        let rest: Substring
        if text.hasPrefix("https://") {
            rest = text.dropFirst("https://".count)
        } else if text.hasPrefix("http://") {
            rest = text.dropFirst("http://".count)
        } else {
            return nil
        }
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex, rest.index(after: slash) != rest.endIndex,
            !text.contains(where: { $0 == " " || $0 == "\n" })
        else { return nil }
        value = text
    }

    /// Scheme and host only: `https://hooks.slack.com/…`.
    public var description: String {
        guard let schemeEnd = value.range(of: "://") else { return "(webhook)" }
        let afterScheme = value[schemeEnd.upperBound...]
        let host = afterScheme.prefix { $0 != "/" }
        return "\(value[..<schemeEnd.upperBound])\(host)/…"
    }

    public var debugDescription: String { description }

    /// `text` with the URL and its path replaced, for error messages that might echo them.
    func redacting(_ text: String) -> String {
        var text = text.replacingAll(value, with: description)
        if let schemeEnd = value.range(of: "://") {
            let afterScheme = value[schemeEnd.upperBound...]
            if let slash = afterScheme.firstIndex(of: "/") {
                text = text.replacingAll(String(afterScheme[slash...]), with: "/…")
            }
        }
        return text
    }
}

extension String {
    fileprivate func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
