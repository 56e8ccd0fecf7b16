/// One numbered schema change: `Migrations/NNNN_name.sql`.
public struct Migration: Sendable, Hashable {
    /// The number in the file name; migrations apply in increasing order.
    public let version: Int
    /// The file name without the number and extension, e.g. `initial`.
    public let name: String
    /// The file's text, byte for byte; its SHA-256 is the migration's checksum.
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// `0001_initial`: how migrations are named in messages and in `--status`.
    public var identifier: String {
        let number = String(version)
        return String(repeating: "0", count: max(0, 4 - number.count)) + number + "_" + name
    }

    /// Parses `NNNN_name.sql` into a migration, or returns nil for any other file name.
    public init?(fileName: String, sql: String) {
        guard fileName.hasSuffix(".sql") else { return nil }
        let stem = fileName.dropLast(4)
        guard let underscore = stem.firstIndex(of: "_"),
            let version = Int(stem[..<underscore]), version > 0
        else { return nil }
        let name = stem[stem.index(after: underscore)...]
        guard !name.isEmpty else { return nil }
        self.init(version: version, name: String(name), sql: sql)
    }

    /// The migrations compiled into this binary from the package's `Migrations/` folder.
    public static let bundled: [Migration] = embeddedMigrationFiles
        .compactMap { Migration(fileName: $0.fileName, sql: $0.sql) }
        .sorted { $0.version < $1.version }
}
