import ArgumentParser
import Database
import Foundation
import Logging
import PostgresNIO
import Queue

/// `fila enqueue [FILE]`.
struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Enqueue messages from a JSON-lines or CSV file (or standard input).",
        discussion: """
            One message per line (JSON lines) or per record (CSV with a header row). Fields are \
            fila_mensagens' columns: cliente_id, telefone, conteudo, tipo (required; resposta, \
            campanha, followup or sistema, which decides the rate-limit weight), prioridade, \
            max_tentativas, agendar_para (ISO 8601), idempotency_key, correlation_id, metadata.

            Valid lines are inserted in batches; a line with an idempotency_key already queued \
            counts as a duplicate and writes nothing. Invalid lines are listed on standard error \
            with their numbers and reasons, and the exit status is then 65. The summary goes to \
            standard output.

            Example: fila enqueue campanha.jsonl
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The file to read; '-' or nothing reads standard input.")
    var file: String?

    @Option(help: "jsonl or csv.")
    var format: String = "jsonl"

    @Option(name: .customLong("batch-size"), help: "Messages per INSERT statement.")
    var batchSize = 5_000

    func validate() throws {
        guard MessageFileFormat(rawValue: format) != nil else { throw ValidationError("--format must be jsonl or csv") }
        guard (1...50_000).contains(batchSize) else { throw ValidationError("--batch-size must be 1-50000") }
    }

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let databaseURL = try context.configuration.requireDatabaseURL()
            let text = try readInput()
            let format = MessageFileFormat(rawValue: format)!

            var parsed: [(line: Int, result: Result<NewMessage, RejectedLine>)] = []
            switch format {
            case .jsonl:
                for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let trimmed = line.hasSuffix("\r") ? line.dropLast() : line
                    if trimmed.allSatisfy(\.isWhitespace) { continue }
                    parsed.append((index + 1, MessageFileReader.message(fromJSONLine: trimmed, line: index + 1)))
                }
            case .csv:
                do {
                    parsed = try MessageFileReader.messages(fromCSV: text)
                } catch {
                    throw InputError(description: "the CSV cannot be read: \(error)")
                }
            }

            var rejected: [RejectedLine] = []
            var valid: [NewMessage] = []
            for entry in parsed {
                switch entry.result {
                case .success(let message): valid.append(message)
                case .failure(let rejection): rejected.append(rejection)
                }
            }

            let progress = ProgressBar(total: valid.count)
            var inserted = 0
            var duplicates = 0
            let logger = context.logger
            try await databaseURL.withConnection(logger: logger) { connection in
                var start = 0
                while start < valid.count {
                    let end = min(start + batchSize, valid.count)
                    let results = try await MessageQueue.enqueue(Array(valid[start..<end]), on: connection, logger: logger)
                    inserted += results.filter(\.inserted).count
                    duplicates += results.count - results.filter(\.inserted).count
                    start = end
                    progress.update(done: end)
                }
            }
            progress.finish()

            for rejection in rejected { printError(rejection.description) }
            print("inserted \(inserted), duplicates \(duplicates), rejected \(rejected.count)")
            if !rejected.isEmpty { throw ExitCode(FilaExitCode.dataError) }
        }
    }

    private func readInput() throws -> String {
        let data: Data
        if let file, file != "-" {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw InputError(description: "cannot read \(file)")
            }
            data = contents
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw InputError(description: "the input is not UTF-8 text")
        }
        return text
    }
}

/// A problem with the input file as a whole (unreadable, not UTF-8, a broken CSV header).
struct InputError: Error, CustomStringConvertible {
    let description: String
}

/// `[=====>     ] 45% 4500/10000` on standard error, only when it is a terminal.
final class ProgressBar {
    private let total: Int
    private let enabled: Bool

    init(total: Int) {
        self.total = total
        self.enabled = isatty(2) != 0 && total > 0
    }

    func update(done: Int) {
        guard enabled else { return }
        let width = 30
        let filled = total == 0 ? width : done * width / total
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
        printErrorRaw("\r[\(bar)] \(done * 100 / max(total, 1))% \(done)/\(total)")
    }

    func finish() {
        if enabled { printErrorRaw("\n") }
    }
}
