import ArgumentParser
import Database
import Foundation
import Logging
import Observability
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

            Every line is checked against the rules of the fila_mensagens table (lengths in \
            Unicode code points, as Postgres counts them; no NUL characters; metadata a JSON \
            object Postgres can store) before anything is written. Valid lines are inserted in \
            batches; a line with an idempotency_key already queued counts as a duplicate and \
            writes nothing. Invalid lines are listed on standard error with their numbers and \
            reasons (never their content), the valid ones are inserted all the same, and the \
            exit status is then 65. The summary goes to standard output.

            The batch has one correlation id, given with --correlation-id or generated, and \
            printed in the summary: every line without a correlation_id of its own gets it, so \
            the worker's log lines and the provider requests for the batch can be found by it.

            Example: fila enqueue campanha.jsonl
            """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The file to read; '-' or nothing reads standard input.")
    var file: String?

    @Option(help: "jsonl or csv.")
    var format: String = "jsonl"

    @Option(name: .customLong("batch-size"), help: "Messages per INSERT statement.")
    var batchSize = 10_000

    @Option(
        name: .customLong("correlation-id"),
        help: "The correlation id of lines without their own (\(CorrelationID.rule)); generated when absent."
    )
    var correlationID: String?

    func validate() throws {
        if let correlationID, !CorrelationID.isValid(correlationID) {
            throw ValidationError("--correlation-id must be \(CorrelationID.rule)")
        }
        guard MessageFileFormat(rawValue: format) != nil else { throw ValidationError("--format must be jsonl or csv") }
        guard (1...50_000).contains(batchSize) else { throw ValidationError("--batch-size must be 1-50000") }
    }

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let databaseURL = try context.configuration.requireDatabaseURL()
            let data = try readInput()
            guard let format = MessageFileFormat(rawValue: format) else { throw ValidationError("--format must be jsonl or csv") }
            let batchID = correlationID.flatMap { CorrelationID(validating: $0) } ?? .generate()

            // Chunks of at most batchSize lines. JSON lines are parsed one chunk ahead of the
            // insert, so parsing overlaps the database's work; CSV records can span lines and
            // are parsed first.
            var chunks: [@Sendable () -> [ParsedLine]] = []
            var total = 0
            switch format {
            case .jsonl:
                let lines = MessageFileReader.jsonLineRanges(data)
                total = lines.count
                var start = 0
                while start < lines.count {
                    let slice = Array(lines[start..<min(start + batchSize, lines.count)])
                    chunks.append { MessageFileReader.messages(fromJSONLines: data, lines: slice) }
                    start += batchSize
                }
            case .csv:
                let text = String(decoding: data, as: UTF8.self)  // validated by readInput
                let parsed: [ParsedLine]
                do {
                    parsed = try MessageFileReader.messages(fromCSV: text)
                } catch {
                    throw InputError(description: "the CSV cannot be read: \(error)")
                }
                total = parsed.count
                var start = 0
                while start < parsed.count {
                    let slice = Array(parsed[start..<min(start + batchSize, parsed.count)])
                    chunks.append { slice }
                    start += batchSize
                }
            }

            let progress = ProgressBar(total: total)
            var done = 0
            var rejected: [RejectedLine] = []
            var inserted = 0
            var duplicates = 0
            let logger = context.logger
            // Two connections insert alternate chunks at once (Postgres maintains the indexes
            // on two cores), while the next chunks are parsed. Each chunk is sorted by
            // idempotency key, so two statements that share keys take them in the same order
            // and wait for each other instead of deadlocking.
            let parseAhead = { (index: Int) -> Task<[ParsedLine], Never>? in
                index < chunks.count ? Task { [parse = chunks[index]] in parse() } : nil
            }
            try await databaseURL.withConnection(logger: logger) { first in
                try await databaseURL.withConnection(logger: logger) { second in
                    var pending = [parseAhead(0), parseAhead(1)]
                    var index = 0
                    while index < chunks.count {
                        var pair: [[LineMessage]] = []
                        for slot in 0..<2 {
                            guard let task = pending[slot] else { continue }
                            let parsed = await task.value
                            var valid: [LineMessage] = []
                            valid.reserveCapacity(parsed.count)
                            for entry in parsed {
                                switch entry.result {
                                case .success(var message):
                                    if message.correlationID?.isEmpty ?? true { message.correlationID = batchID.value }
                                    valid.append(LineMessage(line: entry.line, message: message))
                                case .failure(let rejection): rejected.append(rejection)
                                }
                            }
                            valid.sort { ($0.message.idempotencyKey ?? "") < ($1.message.idempotencyKey ?? "") }
                            pair.append(valid)
                            done += parsed.count
                        }
                        pending = [parseAhead(index + 2), parseAhead(index + 3)]
                        let left = pair.first ?? []
                        let right = pair.count > 1 ? pair[1] : []
                        async let one = Self.insert(left, on: first, logger: logger)
                        async let two = Self.insert(right, on: second, logger: logger)
                        let (a, b) = try await (one, two)
                        inserted += a.inserted + b.inserted
                        duplicates += a.duplicates + b.duplicates
                        rejected += a.rejected + b.rejected
                        progress.update(done: done, inserted: inserted, duplicates: duplicates, rejected: rejected.count)
                        index += 2
                    }
                }
            }
            progress.finish()

            rejected.sort { $0.line < $1.line }
            for rejection in rejected { printError(rejection.description) }
            print("inserted \(inserted), duplicates \(duplicates), rejected \(rejected.count), correlation_id \(batchID)")
            if !rejected.isEmpty { throw ExitCode(FilaExitCode.dataError) }
        }
    }

    /// Inserts one chunk; a deadlock (possible only when the file repeats keys across
    /// chunks in crossing order) is retried, which is safe: the failed statement wrote
    /// nothing, and keys make the retry idempotent.
    ///
    /// Every line was validated as the schema checks, so the database refusing a row should
    /// not happen; if it does (a constraint added by hand, a rule this build does not know),
    /// the chunk is split in halves until each refused line stands alone and is rejected
    /// with the database's reason, never its content, while the others are inserted.
    private static func insert(_ entries: [LineMessage], on connection: PostgresConnection, logger: Logger) async throws -> ChunkResult {
        guard !entries.isEmpty else { return ChunkResult() }
        var attempt = 0
        while true {
            attempt += 1
            do {
                let results = try await MessageQueue.enqueue(entries.map(\.message), on: connection, logger: logger)
                let new = results.filter(\.inserted).count
                return ChunkResult(inserted: new, duplicates: results.count - new)
            } catch let error as DatabaseError where error.sqlState == "40P01" && attempt < 5 {
                logger.debug("enqueue chunk deadlocked; retrying", metadata: ["error": .string(String(describing: error))])
            } catch let error as DatabaseError where error.refusesData {
                guard entries.count > 1 else {
                    // The message names the constraint; the server's detail, which quotes the
                    // row, is not in it. MessageQueue words it "enqueue failed: …".
                    let context = "enqueue failed: "
                    let reason = error.message.hasPrefix(context) ? String(error.message.dropFirst(context.count)) : error.message
                    return ChunkResult(rejected: [RejectedLine(line: entries[0].line, reason: "refused by the database: \(reason)")])
                }
                let middle = entries.count / 2
                let first = try await insert(Array(entries[..<middle]), on: connection, logger: logger)
                let second = try await insert(Array(entries[middle...]), on: connection, logger: logger)
                return ChunkResult(
                    inserted: first.inserted + second.inserted,
                    duplicates: first.duplicates + second.duplicates,
                    rejected: first.rejected + second.rejected
                )
            }
        }
    }

    private func readInput() throws -> Data {
        let data: Data
        if let file, file != "-" {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw InputError(description: "cannot read \(file)")
            }
            data = contents
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        guard String(validating: data, as: UTF8.self) != nil else {
            throw InputError(description: "the input is not UTF-8 text")
        }
        return data
    }
}

typealias ParsedLine = (line: Int, result: Result<NewMessage, RejectedLine>)

/// A valid message and the line it came from.
struct LineMessage: Sendable {
    let line: Int
    let message: NewMessage
}

/// What inserting one chunk did.
struct ChunkResult: Sendable {
    var inserted = 0
    var duplicates = 0
    var rejected: [RejectedLine] = []
}

/// A problem with the input file as a whole (unreadable, not UTF-8, a broken CSV header).
struct InputError: Error, CustomStringConvertible {
    let description: String
}

/// `[=====>     ] 45% 4500/10000  9,850 rows/s  inserted 4400  duplicates 90  rejected 10` on
/// standard error, only when it is a terminal and the file is large enough to wait for.
final class ProgressBar {
    /// Smaller files finish before a bar would tell anyone anything.
    static let minimumLines = 2000

    private let total: Int
    private let enabled: Bool
    private let started = ContinuousClock.now

    init(total: Int) {
        self.total = total
        self.enabled = isatty(2) != 0 && total >= Self.minimumLines
    }

    func update(done: Int, inserted: Int, duplicates: Int, rejected: Int) {
        guard enabled else { return }
        printErrorRaw("\r" + Self.line(done: done, total: total, inserted: inserted, duplicates: duplicates, rejected: rejected,
                                       elapsed: ContinuousClock.now - started))
    }

    func finish() {
        if enabled { printErrorRaw("\n") }
    }

    /// One state of the bar: how far, how fast, and what became of the rows so far.
    static func line(done: Int, total: Int, inserted: Int, duplicates: Int, rejected: Int, elapsed: Duration) -> String {
        let width = 30
        let filled = total == 0 ? width : min(width, done * width / total)
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Int((Double(done) / seconds).rounded()) : 0
        return "[\(bar)] \(done * 100 / max(total, 1))% \(done)/\(total)  \(rate) rows/s  inserted \(inserted)  duplicates \(duplicates)  rejected \(rejected)"
    }
}
