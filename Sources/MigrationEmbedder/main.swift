// Writes a Swift file that embeds every Migrations/NNNN_name.sql, so an installed `fila`
// binary carries its schema with it. Run by the EmbedMigrations build plugin:
//
//     MigrationEmbedder OUTPUT.swift FILE.sql...
//
// A file that would not round-trip byte for byte (CRLF line endings, invalid UTF-8) or whose
// name is not NNNN_name.sql fails the build with a message naming the file.
import Foundation

struct EmbedderError: Error, CustomStringConvertible {
    let description: String
}

func isValidName(_ fileName: String) -> Bool {
    guard fileName.hasSuffix(".sql") else { return false }
    let stem = fileName.dropLast(4)
    let parts = stem.split(separator: "_", maxSplits: 1)
    guard parts.count == 2, parts[0].count == 4, parts[0].allSatisfy(\.isASCII), Int(parts[0]) != nil,
        !parts[1].isEmpty,
        parts[1].allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") })
    else { return false }
    return true
}

/// A raw string delimiter long enough that neither `"###` nor `\###` occurs in the text.
func delimiter(for text: String) -> String {
    var hashes = "#"
    while text.contains("\"" + hashes) || text.contains("\\" + hashes) { hashes += "#" }
    return hashes
}

func run() throws {
    let arguments = CommandLine.arguments.dropFirst()
    guard let output = arguments.first else {
        throw EmbedderError(description: "usage: MigrationEmbedder OUTPUT.swift FILE.sql...")
    }
    let inputs = arguments.dropFirst().sorted { ($0 as NSString).lastPathComponent < ($1 as NSString).lastPathComponent }

    var entries: [String] = []
    var seenVersions: [Substring: String] = [:]
    for path in inputs {
        let fileName = (path as NSString).lastPathComponent
        guard isValidName(fileName) else {
            throw EmbedderError(description: "\(path): a migration is named NNNN_lowercase_name.sql")
        }
        let version = fileName.prefix(4)
        if let other = seenVersions[version] {
            throw EmbedderError(description: "\(path): version \(version) is also used by \(other)")
        }
        seenVersions[version] = fileName
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let text = String(data: data, encoding: .utf8) else {
            throw EmbedderError(description: "\(path): not valid UTF-8")
        }
        guard !text.contains("\r") else {
            throw EmbedderError(description: "\(path): use LF line endings (the checksum is over the file's bytes)")
        }
        let hashes = delimiter(for: text)
        entries.append("    (fileName: \"\(fileName)\", sql: \(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes)),")
    }

    let source = """
        // Generated at build time by MigrationEmbedder from Migrations/*.sql. Do not edit.

        let embeddedMigrationFiles: [(fileName: String, sql: String)] = [
        \(entries.joined(separator: "\n"))
        ]

        """
    try Data(source.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
}

do {
    try run()
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
