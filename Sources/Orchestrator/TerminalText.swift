/// Text from a file or the database made safe to print to a terminal: control characters
/// (ESC sequences included), line and paragraph separators and bidirectional overrides are
/// shown as Swift escapes (`\n`, `\u{1B}`), and long values are cut short with "…". A
/// rejected line or a job's error can then neither recolour, move the cursor, rewrite the
/// title of, nor flood the operator's terminal.
///
/// ```swift
/// printError("line 3: tipo \(TerminalText.quoted(value)) is not one of …")   // tipo '\u{1B}[31mspam' …
/// ```
enum TerminalText {
    /// How much of a long value (a job's error or result) is shown on its own line.
    static let longValue = 2_000

    /// `text` escaped and cut to about `limit` characters.
    static func escaped(_ text: some StringProtocol, limit: Int) -> String {
        var output = ""
        var length = 0
        for scalar in text.unicodeScalars {
            if length >= limit {
                output += "…"
                break
            }
            let piece = escape(scalar)
            output += piece
            length += piece.unicodeScalars.count
        }
        return output
    }

    /// `text` escaped, cut short, and in single quotes: for a value inside a sentence.
    static func quoted(_ text: some StringProtocol, limit: Int = 40) -> String {
        "'\(escaped(text, limit: limit))'"
    }

    private static func escape(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        default: break
        }
        let needsEscape: Bool
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator:
            needsEscape = true
        default:
            // Bidirectional formatting characters reorder what follows them on screen.
            needsEscape = scalar.value == 0x061C || (0x200E...0x200F).contains(scalar.value)
                || (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
        }
        guard needsEscape else { return String(scalar) }
        return "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
    }
}
