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

extension AttemptResolution {
    /// A failed call made through a chip: counted in `chip_falhas`.
    var isChipFailure: Bool {
        switch self {
        case .retry(_, _, _, _, let route), .fail(_, _, _, let route): return route?.chipID != nil
        case .sent, .deferred: return false
        }
    }
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
        // A chip's failed calls are counted (chip_falhas) in the same statement, for the rows
        // written: the count exists exactly when the outcome does. Batches without one (nearly
        // all) run the plain UPDATE.
        let countsChipFailures = results.contains(where: \.resolution.isChipFailure)
        let query: PostgresQuery = """
            \(unescaped: countsChipFailures ? "WITH u AS (" : "")
            UPDATE fila_mensagens m SET
                status = CASE
                    WHEN r.kind = 'sent' THEN 'enviada'
                    WHEN r.kind = 'fail' THEN 'erro'
                    WHEN r.kind = 'retry' AND m.tentativas + 1 >= m.max_tentativas THEN 'erro'
                    ELSE 'pendente' END,
                tentativas = m.tentativas + CASE WHEN r.kind IN ('retry', 'fail') THEN 1 ELSE 0 END,
                agendar_para = CASE WHEN r.kind IN ('retry', 'defer')
                    THEN now() + make_interval(secs => r.delay) ELSE m.agendar_para END,
                outcome = r.outcome,
                outcome_reason_code = nullif(r.reason, ''),
                outcome_at = now(),
                ultimo_erro = CASE WHEN r.kind IN ('retry', 'fail') THEN r.error ELSE m.ultimo_erro END,
                enviada_em = CASE WHEN r.kind = 'sent' THEN now() ELSE m.enviada_em END,
                provider = coalesce(nullif(r.provider, ''), m.provider),
                provider_message_id = coalesce(nullif(r.provider_id, ''), m.provider_message_id),
                chip_id = coalesce(nullif(r.chip, ''), m.chip_id),
                worker_id = CASE WHEN r.kind = 'sent' THEN m.worker_id ELSE NULL END,
                processando_desde = CASE WHEN r.kind = 'sent' THEN m.processando_desde ELSE NULL END,
                updated_at = now()
            FROM unnest(
                \(results.map(\.messageID))::uuid[], \(results.map(\.claim.workerID))::text[],
                \(results.map(\.claim.tentativas))::int4[], \(results.map(\.claim.claimedAtMicroseconds))::int8[],
                \(kinds)::text[], \(outcomes)::text[], \(reasons)::text[], \(errors)::text[], \(delays)::float8[],
                \(providers)::text[], \(providerIDs)::text[], \(chips)::text[]
            ) AS r(id, worker_id, tentativas, claimed_at, kind, outcome, reason, error, delay, provider, provider_id, chip)
            WHERE m.id = r.id
              AND m.status = 'processando'
              AND m.worker_id = r.worker_id
              AND m.tentativas = r.tentativas
              AND (extract(epoch FROM m.processando_desde) * 1000000)::int8 = r.claimed_at
            RETURNING m.id\(unescaped: countsChipFailures ? Self.chipFailureCount : "")
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
    /// Ends the outcome UPDATE (as `WITH u AS (UPDATE … RETURNING m.id`) with the count of
    /// each chip's failed calls, by hour and outcome. Rows go in one order, so two workers'
    /// batches take the counters' row locks alike and cannot deadlock.
    static let chipFailureCount = """
        , r.kind, r.outcome, r.chip),
        counted AS (
            INSERT INTO chip_falhas AS x (chip_id, hora, outcome, falhas)
            SELECT u.chip, date_trunc('hour', now()), u.outcome, count(*)
              FROM u
             WHERE u.kind IN ('retry', 'fail') AND u.chip <> ''
             GROUP BY u.chip, u.outcome
             ORDER BY u.chip, u.outcome
            ON CONFLICT (chip_id, hora, outcome) DO UPDATE SET falhas = x.falhas + excluded.falhas)
        SELECT id FROM u
        """

    static func withoutNUL(_ text: String) -> String {
        text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "") : text
    }
}
