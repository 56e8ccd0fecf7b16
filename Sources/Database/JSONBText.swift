import Primitives

/// Whether Postgres would accept a text as a `jsonb` value, checked without the database,
/// so that one bad value is refused with its own reason instead of failing a whole
/// statement.
///
/// It follows Postgres's JSON grammar rather than Foundation's, which accepts things
/// `jsonb` refuses: `\u0000` (no text can hold it), a UTF-16 surrogate escape without its
/// pair, and numbers outside `numeric`'s range (more than 131,072 digits before the point,
/// more than 16,383 after it, or an exponent of a billion). Whitespace is only space, tab,
/// newline and carriage return. Nesting is walked with an explicit stack, never recursion.
///
/// ```swift
/// if let problem = JSONBText.problem(in: text, requireObject: true) { print("metadata \(problem)") }
/// ```
public enum JSONBText {
    /// Why `text` is not what `jsonb` would store, worded to follow a field's name
    /// ("metadata is not valid JSON …"), never quoting the text; nil when it is fine.
    public static func problem(in text: String, requireObject: Bool) -> String? {
        var text = text
        if text.utf8.contains(0) { return "contains a NUL character (U+0000), which Postgres cannot store" }
        return text.withUTF8 { bytes in
            var parser = Parser(bytes: bytes)
            return parser.run(requireObject: requireObject)
        }
    }

    /// The largest digit counts of `numeric` (PostgreSQL's NUMERIC_WEIGHT_MAX and
    /// NUMERIC_DSCALE_MAX), and the exponent `numeric_in` refuses outright (INT_MAX / 2).
    static let maximumLeadingDigitExponent = 131_071
    static let maximumScale = 16_383
    static let exponentLimit = 1_073_741_823

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) {
            self.bytes = bytes
        }

        private enum Container {
            case object
            case array
        }

        private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        private mutating func skipSpace() {
            while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        private func invalid() -> String {
            index < bytes.count ? "is not valid JSON (at byte \(index + 1))" : "is not valid JSON (it ends too early)"
        }

        mutating func run(requireObject: Bool) -> String? {
            skipSpace()
            let isObject = peek == 0x7B
            if let problem = value() { return problem }
            skipSpace()
            guard index == bytes.count else { return invalid() }
            return requireObject && !isObject ? "must be a JSON object" : nil
        }

        /// Parses one value (with everything nested in it) at `index`.
        private mutating func value() -> String? {
            var stack: [Container] = []
            while true {
                skipSpace()
                guard let byte = peek else { return invalid() }
                // One scalar or the start of a container.
                switch byte {
                case 0x7B:  // {
                    index += 1
                    skipSpace()
                    if peek == 0x7D {
                        index += 1
                    } else {
                        stack.append(.object)
                        if let problem = key() { return problem }
                        continue
                    }
                case 0x5B:  // [
                    index += 1
                    skipSpace()
                    if peek == 0x5D {
                        index += 1
                    } else {
                        stack.append(.array)
                        continue
                    }
                case 0x22:
                    if let problem = string() { return problem }
                case 0x2D, 0x30...0x39:
                    if let problem = number() { return problem }
                case 0x74:
                    if let problem = literal("true") { return problem }
                case 0x66:
                    if let problem = literal("false") { return problem }
                case 0x6E:
                    if let problem = literal("null") { return problem }
                default:
                    return invalid()
                }
                // A value ended: close containers or move to the next member.
                while true {
                    guard let container = stack.last else { return nil }
                    skipSpace()
                    guard let next = peek else { return invalid() }
                    if next == 0x2C {  // ,
                        index += 1
                        if container == .object, let problem = key() { return problem }
                        break
                    }
                    guard next == (container == .object ? 0x7D : 0x5D) else { return invalid() }
                    index += 1
                    stack.removeLast()
                }
            }
        }

        /// `"key" :`, leaving `index` at the member's value.
        private mutating func key() -> String? {
            skipSpace()
            guard peek == 0x22 else { return invalid() }
            if let problem = string() { return problem }
            skipSpace()
            guard peek == 0x3A else { return invalid() }
            index += 1
            return nil
        }

        private mutating func literal(_ word: StaticString) -> String? {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { return invalid() }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
                return invalid()
            }
            index += count
            return nil
        }

        private mutating func string() -> String? {
            index += 1  // the opening quote
            var highSurrogate = false
            while let byte = peek {
                if highSurrogate && byte != 0x5C { return "has a UTF-16 surrogate escape without its pair (at byte \(index + 1))" }
                switch byte {
                case 0x22:
                    index += 1
                    return nil
                case 0x5C:
                    guard index + 1 < bytes.count else { return invalid() }
                    let escaped = bytes[index + 1]
                    if highSurrogate && escaped != 0x75 { return "has a UTF-16 surrogate escape without its pair (at byte \(index + 1))" }
                    switch escaped {
                    case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:
                        index += 2
                    case 0x75:
                        let start = index
                        index += 2
                        guard let unit = hex4() else { return invalid() }
                        switch unit {
                        case 0:
                            return "contains \\u0000 (NUL), which Postgres cannot store (at byte \(start + 1))"
                        case 0xD800...0xDBFF:
                            if highSurrogate { return "has a UTF-16 surrogate escape without its pair (at byte \(start + 1))" }
                            highSurrogate = true
                        case 0xDC00...0xDFFF:
                            if !highSurrogate { return "has a UTF-16 surrogate escape without its pair (at byte \(start + 1))" }
                            highSurrogate = false
                        default:
                            if highSurrogate { return "has a UTF-16 surrogate escape without its pair (at byte \(start + 1))" }
                        }
                    default:
                        return invalid()
                    }
                default:
                    // Control characters must be escaped in JSON.
                    guard byte >= 0x20 else { return invalid() }
                    index += 1
                }
            }
            return invalid()
        }

        private mutating func hex4() -> UInt32? {
            guard let unit = JSONUnicodeEscape.codeUnit(in: bytes, at: index) else { return nil }
            index += 4
            return unit
        }

        /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, then `numeric`'s range.
        private mutating func number() -> String? {
            let start = index
            func malformed() -> String {
                index = start
                return invalid()
            }
            if peek == 0x2D { index += 1 }
            func digits() -> (count: Int, firstNonZero: Int?) {
                var count = 0
                var firstNonZero: Int?
                while let byte = peek, (0x30...0x39).contains(byte) {
                    if byte != 0x30 && firstNonZero == nil { firstNonZero = count }
                    count += 1
                    index += 1
                }
                return (count, firstNonZero)
            }
            let integer = digits()
            guard integer.count > 0 else { return malformed() }
            if integer.count > 1 && integer.firstNonZero != 0 { return malformed() }  // a leading zero
            var fraction = (count: 0, firstNonZero: Int?.none)
            if peek == 0x2E {
                index += 1
                fraction = digits()
                guard fraction.count > 0 else { return malformed() }
            }
            var exponent = 0
            if peek == 0x65 || peek == 0x45 {
                index += 1
                var negative = false
                if peek == 0x2B || peek == 0x2D {
                    negative = peek == 0x2D
                    index += 1
                }
                var count = 0
                while let byte = peek, (0x30...0x39).contains(byte) {
                    // Saturate: anything at the limit is refused anyway.
                    exponent = min(exponent * 10 + Int(byte - 0x30), JSONBText.exponentLimit)
                    count += 1
                    index += 1
                }
                guard count > 0 else { return malformed() }
                if negative { exponent = -exponent }
            }
            // A number runs into the next token only through a delimiter.
            if let byte = peek, !(byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x2C || byte == 0x5D || byte == 0x7D) {
                return malformed()
            }
            let outOfRange = "has a number outside the range Postgres's numeric can store (at byte \(start + 1))"
            if abs(exponent) >= JSONBText.exponentLimit { return outOfRange }
            if fraction.count - exponent > JSONBText.maximumScale { return outOfRange }
            let leading: Int?
            if let first = integer.firstNonZero {
                leading = integer.count - 1 - first + exponent
            } else if let first = fraction.firstNonZero {
                leading = -1 - first + exponent
            } else {
                leading = nil  // zero
            }
            if let leading, leading > JSONBText.maximumLeadingDigitExponent { return outOfRange }
            return nil
        }
    }
}
