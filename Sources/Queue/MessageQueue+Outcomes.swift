#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives

/// How an attempt ended, as the worker reports it.
public enum AttemptResolution: Sendable, Hashable {
    /// Sent: `enviada`, outcome SENT.
    case sent(provider: String?, providerMessageID: String?, chipID: String?)
    /// A failure worth retrying: back to `pendente` after `retryAfter` with an attempt burned,
    /// or `erro` when that was the last attempt. `route`: what the failed call went through.
    case retry(outcome: SendOutcome, reasonCode: String, error: String, retryAfter: Duration, route: AttemptRoute? = nil)
    /// A failure no retry can fix: `erro`, an attempt burned.
    case fail(outcome: SendOutcome, reasonCode: String, error: String, route: AttemptRoute? = nil)
    /// Not sendable now, through no fault of the message (circuit open, rate limit, no chip,
    /// shutdown): back to `pendente` after `until`, no attempt burned.
    case deferred(outcome: SendOutcome, reasonCode: String, until: Duration)
}

/// One finished attempt: which claim it ends and how.
public struct AttemptResult: Sendable, Hashable {
    public let messageID: UUID
    public let claim: ClaimToken
    public let resolution: AttemptResolution

    public init(messageID: UUID, claim: ClaimToken, resolution: AttemptResolution) {
        self.messageID = messageID
        self.claim = claim
        self.resolution = resolution
    }
}

/// What a batch of outcome writes did.
public struct FinishReport: Sendable {
    /// Messages whose outcome was written.
    public let written: Set<UUID>
    /// Messages whose claim no longer held (rescued, cancelled, claimed again): nothing was
    /// written for them.
    public let fenced: Set<UUID>
}

extension MessageQueue {
    /// Writes many attempts' outcomes in one statement. Each write is fenced by its claim: a
    /// row that was rescued, cancelled or re-claimed since is left untouched and reported
    /// in `fenced`, so a worker presumed dead cannot overwrite what happened meanwhile.
    public func finish(_ results: [AttemptResult], logger: Logger) async throws -> FinishReport {
        guard !results.isEmpty else { return FinishReport(written: [], fenced: []) }
        var kinds: [String] = []
        var outcomes: [String] = []
        var reasons: [String] = []
        var errors: [String] = []
        var delays: [Double] = []
        var providers: [String] = []
        var providerIDs: [String] = []
        var chips: [String] = []
        // Postgres refuses NUL in text, and one bad string would fail the whole batch again and
        // again: what a sender reports is stored without it.
        for result in results {
            switch result.resolution {
            case .sent(let provider, let providerMessageID, let chipID):
                kinds.append("sent"); outcomes.append(SendOutcome.sent.rawValue); reasons.append(""); errors.append("")
                delays.append(0); providers.append(provider.map(Self.withoutNUL) ?? "")
                providerIDs.append(providerMessageID.map(Self.withoutNUL) ?? ""); chips.append(chipID.map(Self.withoutNUL) ?? "")
            case .retry(let outcome, let reasonCode, let error, let retryAfter, let route):
                kinds.append("retry"); outcomes.append(outcome.rawValue); reasons.append(Self.withoutNUL(reasonCode)); errors.append(Self.withoutNUL(error))
                delays.append(retryAfter.seconds); providers.append(route.map { Self.withoutNUL($0.provider) } ?? ""); providerIDs.append("")
                chips.append(route?.chipID.map(Self.withoutNUL) ?? "")
            case .fail(let outcome, let reasonCode, let error, let route):
                kinds.append("fail"); outcomes.append(outcome.rawValue); reasons.append(Self.withoutNUL(reasonCode)); errors.append(Self.withoutNUL(error))
                delays.append(0); providers.append(route.map { Self.withoutNUL($0.provider) } ?? ""); providerIDs.append("")
                chips.append(route?.chipID.map(Self.withoutNUL) ?? "")
            case .deferred(let outcome, let reasonCode, let until):
                kinds.append("defer"); outcomes.append(outcome.rawValue); reasons.append(Self.withoutNUL(reasonCode)); errors.append("")
                delays.append(until.seconds); providers.append(""); providerIDs.append(""); chips.append("")
            }
        }
        // The statement is `fila_finish` (migration 0021), planned once per connection; it also
        // counts a chip's failed calls (chip_falhas) for the rows written.
        let query: PostgresQuery = """
            SELECT id FROM fila_finish(
                \(results.map(\.messageID)), \(results.map(\.claim.workerID)), \(results.map(\.claim.tentativas)),
                \(results.map(\.claim.claimedAtMicroseconds)), \(kinds), \(outcomes), \(reasons), \(errors), \(delays),
                \(providers), \(providerIDs), \(chips))
            """
        var written = Set<UUID>()
        do {
            for try await id in try await client.query(query, logger: logger).decode(UUID.self) {
                written.insert(id)
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "writing outcomes failed")
        }
        let fenced = Set(results.map(\.messageID)).subtracting(written)
        if !fenced.isEmpty {
            logger.warning(
                "outcomes not written: these claims no longer hold (rescued or cancelled meanwhile)",
                metadata: ["fila.fenced": .stringConvertible(fenced.count)]
            )
        }
        return FinishReport(written: written, fenced: fenced)
    }
}

extension MessageQueue {
    static func withoutNUL(_ text: String) -> String {
        text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "") : text
    }
}
