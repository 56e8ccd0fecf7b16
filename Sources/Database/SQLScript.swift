/// A SQL script split into the statements it holds.
///
/// PostgresNIO speaks only the extended query protocol, which takes one statement per
/// query, so a migration file is split here before it is sent. The splitter understands
/// everything that can hide a semicolon: single-quoted strings (with `''` and, in `E''`
/// strings, backslash escapes), quoted identifiers, dollar-quoted bodies (`$$ … $$`,
/// `$fn$ … $fn$`), line comments and nested block comments. psql meta-commands are refused,
/// because a migration must apply the same way through `fila migrate` and through psql.
///
/// ```swift
/// let script = try SQLScript("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
/// script.statements.map(\.text) // ["CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)"]
/// ```
public struct SQLScript: Sendable, Equatable {
    public struct Statement: Sendable, Equatable {
        /// The statement, trimmed, without its terminating semicolon.
        public let text: String
        /// The 1-based line of the script where the statement starts.
        public let line: Int
    }

    /// The statements in order.
    public let statements: [Statement]

    public init(_ text: String) throws(SQLScriptError) {
        self.statements = try Self.split(text)
    }

    private static func split(_ text: String) throws(SQLScriptError) -> [Statement] {
        let scalars = Array(text.unicodeScalars)
        var statements: [Statement] = []
        var current = String.UnicodeScalarView()
        var contentLine: Int?  // where the current statement's first token starts
        var line = 1
        var index = 0

        func markContent(at line: Int) {
            if contentLine == nil { contentLine = line }
        }

        func flush() {
            let statement = String(current).trimmingWhitespace()
            if let contentLine, !statement.isEmpty { statements.append(Statement(text: statement, line: contentLine)) }
            current = String.UnicodeScalarView()
            contentLine = nil
        }

        func peek(_ offset: Int) -> Unicode.Scalar? {
            index + offset < scalars.count ? scalars[index + offset] : nil
        }

        while index < scalars.count {
            let scalar = scalars[index]
            switch scalar {
            case "\n":
                line += 1
                current.append(scalar)
                index += 1

            case "-" where peek(1) == "-":
                // Line comment: kept in the statement text, never a terminator.
                while index < scalars.count, scalars[index] != "\n" {
                    current.append(scalars[index])
                    index += 1
                }

            case "/" where peek(1) == "*":
                let startLine = line
                var depth = 0
                repeat {
                    if scalars[index] == "/", peek(1) == "*" {
                        depth += 1
                        current.append(contentsOf: "/*".unicodeScalars)
                        index += 2
                    } else if scalars[index] == "*", peek(1) == "/" {
                        depth -= 1
                        current.append(contentsOf: "*/".unicodeScalars)
                        index += 2
                    } else {
                        if scalars[index] == "\n" { line += 1 }
                        current.append(scalars[index])
                        index += 1
                    }
                } while depth > 0 && index < scalars.count
                if depth > 0 { throw SQLScriptError(.unterminatedComment, line: startLine) }

            case "'":
                // E'…' strings honour backslash escapes; standard strings only ''.
                let previous = current.last
                let isEscapeString = previous == "E" || previous == "e"
                let startLine = line
                current.append(scalar)
                index += 1
                var closed = false
                while index < scalars.count {
                    let c = scalars[index]
                    if c == "\n" { line += 1 }
                    if isEscapeString, c == "\\", index + 1 < scalars.count {
                        current.append(c)
                        current.append(scalars[index + 1])
                        if scalars[index + 1] == "\n" { line += 1 }
                        index += 2
                        continue
                    }
                    current.append(c)
                    index += 1
                    if c == "'" {
                        if peek(0) == "'" {
                            current.append("'")
                            index += 1
                        } else {
                            closed = true
                            break
                        }
                    }
                }
                if !closed { throw SQLScriptError(.unterminatedString, line: startLine) }
                markContent(at: startLine)

            case "\"":
                let startLine = line
                current.append(scalar)
                index += 1
                var closed = false
                while index < scalars.count {
                    let c = scalars[index]
                    if c == "\n" { line += 1 }
                    current.append(c)
                    index += 1
                    if c == "\"" {
                        if peek(0) == "\"" {
                            current.append("\"")
                            index += 1
                        } else {
                            closed = true
                            break
                        }
                    }
                }
                if !closed { throw SQLScriptError(.unterminatedIdentifier, line: startLine) }
                markContent(at: startLine)

            case "$":
                markContent(at: line)
                if let tag = dollarTag(in: scalars, at: index, after: current.last) {
                    let startLine = line
                    current.append(contentsOf: tag)
                    index += tag.count
                    var closed = false
                    while index < scalars.count {
                        if scalars[index] == "$", matches(tag, in: scalars, at: index) {
                            current.append(contentsOf: tag)
                            index += tag.count
                            closed = true
                            break
                        }
                        if scalars[index] == "\n" { line += 1 }
                        current.append(scalars[index])
                        index += 1
                    }
                    if !closed { throw SQLScriptError(.unterminatedDollarQuote, line: startLine) }
                } else {
                    // A positional parameter such as $1, or a `$` inside an identifier.
                    current.append(scalar)
                    index += 1
                }

            case "\\" where String(current).lastLine.allSatisfy(\.isWhitespace):
                throw SQLScriptError(.metaCommand, line: line)

            case ";":
                index += 1
                flush()

            default:
                if !scalar.properties.isWhitespace { markContent(at: line) }
                current.append(scalar)
                index += 1
            }
        }
        flush()
        return statements
    }

    /// The opening tag of a dollar quote at `index` (`$$` or `$name$`), or nil when the
    /// `$` starts a positional parameter or continues an identifier.
    private static func dollarTag(
        in scalars: [Unicode.Scalar], at index: Int, after previous: Unicode.Scalar?
    ) -> [Unicode.Scalar]? {
        if let previous, previous.isIdentifierCharacter { return nil }
        var end = index + 1
        while end < scalars.count, scalars[end] != "$" {
            let c = scalars[end]
            let allowed = end == index + 1 ? c.isIdentifierStart : c.isIdentifierCharacter
            if !allowed { return nil }
            end += 1
        }
        guard end < scalars.count else { return nil }
        return Array(scalars[index...end])
    }

    private static func matches(_ tag: [Unicode.Scalar], in scalars: [Unicode.Scalar], at index: Int) -> Bool {
        guard index + tag.count <= scalars.count else { return false }
        return scalars[index..<index + tag.count].elementsEqual(tag)
    }
}

/// Why a SQL script could not be split, with the 1-based line where the problem starts.
public struct SQLScriptError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case unterminatedString = "a string literal is not closed"
            case unterminatedIdentifier = "a quoted identifier is not closed"
            case unterminatedDollarQuote = "a dollar-quoted body is not closed"
            case unterminatedComment = "a block comment is not closed"
            case metaCommand = "psql meta-commands (lines starting with a backslash) are not allowed"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        public static let unterminatedString = Self(.unterminatedString)
        public static let unterminatedIdentifier = Self(.unterminatedIdentifier)
        public static let unterminatedDollarQuote = Self(.unterminatedDollarQuote)
        public static let unterminatedComment = Self(.unterminatedComment)
        public static let metaCommand = Self(.metaCommand)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let line: Int

    public init(_ code: Code, line: Int) {
        self.code = code
        self.line = line
    }

    public var description: String { "line \(line): \(code)" }
}

extension Unicode.Scalar {
    fileprivate var isIdentifierStart: Bool {
        properties.isAlphabetic || self == "_" || value >= 0x80
    }

    fileprivate var isIdentifierCharacter: Bool {
        isIdentifierStart || ("0"..."9").contains(self) || self == "$"
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }

    fileprivate var lastLine: Substring {
        if let newline = lastIndex(of: "\n") { return self[index(after: newline)...] }
        return self[...]
    }
}
