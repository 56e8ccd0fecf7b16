#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import Database

/// `fila migrate [--status]`.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending database migrations, or show which are applied.",
        discussion: """
            Migrations are embedded in this binary. Each applies in its own transaction,
            which takes a transaction-scoped advisory lock first, so several processes may
            run `fila migrate` at once (also through a transaction pooler): each migration is
            applied once, in order, and the other runs wait and skip it. An applied
            migration whose text changed since is refused (exit 65).
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "List every migration with its state instead of applying anything (exit 65 if one changed).")
    var status = false

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let databaseURL = try context.configuration.requireDatabaseURL()
            let migrator = try Migrator()
            let logger = context.logger
            if status {
                let statuses = try await databaseURL.withConnection(logger: logger) { connection in
                    try await migrator.status(on: connection, logger: logger)
                }
                print(Self.render(statuses), terminator: "")
                if statuses.contains(where: { if case .changed = $0.state { true } else { false } }) {
                    throw ExitCode(FilaExitCode.dataError)
                }
            } else {
                let report = try await databaseURL.withConnection(logger: logger) { connection in
                    try await migrator.migrate(on: connection, logger: logger)
                }
                print(Self.render(report), terminator: "")
            }
        }
    }

    static func render(_ report: MigrationReport) -> String {
        var text = ""
        if report.waitedForLock { text += "waited for another migration run to finish\n" }
        for applied in report.applied {
            text += "applied \(applied.migration.identifier) (\(applied.durationMilliseconds) ms)\n"
        }
        let plural = { (count: Int) in count == 1 ? "migration" : "migrations" }
        text += "database is up to date: \(report.applied.count) \(plural(report.applied.count)) applied now, \(report.alreadyApplied) already applied\n"
        return text
    }

    static func render(_ statuses: [MigrationStatus]) -> String {
        let rows: [[String]] = statuses.map { status in
            switch status.state {
            case .applied(let at): [status.identifier, "applied", timestamp(at)]
            case .pending: [status.identifier, "pending", "-"]
            case .changed(let at): [status.identifier, "CHANGED since applied", timestamp(at)]
            case .unknown(let at): [status.identifier, "unknown to this build", timestamp(at)]
            }
        }
        let table = [["MIGRATION", "STATE", "APPLIED AT"]] + rows
        let widths = (0..<3).map { column in table.map { $0[column].count }.max() ?? 0 }
        var text = ""
        for row in table {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }
            text += cells.joined(separator: "  ") + "\n"
        }
        let pending = statuses.filter { $0.state == .pending }.count
        text += pending == 0 ? "up to date\n" : "\(pending) pending\n"
        return text
    }

    private static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
