import Primitives

/// How an alert event reads in Slack: a `text` that stands alone in notifications, and
/// blocks with the title, the explanation, the fields and the rule's name (what ops grep
/// `alert_events` and the runbook for).
enum AlertMessage {
    static func slackMessage(rule: String, key: String, kind: String, title: String, text: String, payload: JSONValue) -> SlackMessage {
        let resolved = kind == "resolved"
        let mark = resolved ? ":white_check_mark:" : ":rotating_light:"
        let identity = key.isEmpty ? "`\(rule)`" : "`\(rule)` · `\(key)`"
        var fields: [JSONValue] = []
        if case .array(let stored)? = payload["fields"] {
            for field in stored.prefix(10) {
                guard let name = field["name"]?.stringValue, let value = field["value"]?.stringValue else { continue }
                fields.append(["type": "mrkdwn", "text": .string("*\(name)*\n\(value)")])
            }
        }
        var blocks: [JSONValue] = [
            ["type": "header", "text": ["type": "plain_text", "text": .string(String(title.prefix(150))), "emoji": true]],
            ["type": "section", "text": ["type": "mrkdwn", "text": .string(String(text.prefix(3000)))]],
        ]
        if !fields.isEmpty {
            blocks.append(["type": "section", "fields": .array(fields)])
        }
        blocks.append(["type": "context", "elements": [["type": "mrkdwn", "text": .string("\(mark) \(resolved ? "resolvido" : "alerta") \(identity) · fila")]]])
        var fallback = "\(mark) [\(rule)] \(title)\n\(text)"
        if !fields.isEmpty, case .array(let stored)? = payload["fields"] {
            let lines = stored.compactMap { field -> String? in
                guard let name = field["name"]?.stringValue, let value = field["value"]?.stringValue else { return nil }
                return "• \(name): \(value)"
            }
            fallback += "\n" + lines.joined(separator: "\n")
        }
        return SlackMessage(text: fallback, blocks: blocks)
    }
}
