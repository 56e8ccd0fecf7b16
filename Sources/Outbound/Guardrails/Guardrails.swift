#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives
import Queue
import Synchronization

/// The guardrails a message passes before anything spends budget on it (seed T06): a
/// blocked doctor receives nothing, and a doctor receives at most `contact_cap_7d` campaign
/// messages per rolling 7 days. A message may carry a bypass (set only by an authorised
/// database role); each guardrail it is let past is a `guardrail_bypasses` row.
///
/// Postgres decides every check (`fila_guardrails_check`), under a per-doctor transaction
/// lock for the cap, so workers on any number of machines never admit more than the cap.
///
/// ```swift
/// switch try await guardrails.check(message, logger: logger) {
/// case .refused(let guardrail, _): /* FAILED_GUARDRAIL, guardrail.reasonCode */
/// case .allowed(let admission): /* send; release(admission) if it surely did not go out */
/// }
/// ```
public final class Guardrails: Sendable {
    /// A guardrail, by the name it has in `guardrail_bypasses.guardrail`.
    public enum Guardrail: String, Sendable, Hashable, CaseIterable {
        /// The doctor has an open row in `medico_bloqueios`.
        case blocked
        /// The doctor had `contactCapLimit` campaign contacts in the last 7 days.
        case contactCap7d = "contact_cap_7d"

        /// `fila_mensagens.outcome_reason_code`: `guardrail:blocked`, `guardrail:contact_cap_7d`.
        public var reasonCode: String { "guardrail:\(rawValue)" }
    }

    /// A message the guardrails let through.
    public struct Admission: Sendable, Hashable {
        public let messageID: UUID
        /// Whether this check counted the message as a campaign contact (to give back if it
        /// surely did not go out).
        public let counted: Bool
        /// The doctor's campaign contacts in the last 7 days with this one; nil for other kinds.
        public let contacts: Int?
        /// The guardrails its bypass let it past.
        public let bypassed: [Guardrail]
    }

    public enum Verdict: Sendable, Hashable {
        case allowed(Admission)
        /// `contacts`: for the cap, the doctor's campaign contacts in the last 7 days.
        case refused(Guardrail, contacts: Int?)
    }

    private let client: PostgresClient
    private let defaults: GuardrailPolicy
    private let settings: AppSettings?
    /// How long one check or release may take.
    public let timeout: Duration
    private let logger: Logger
    private let reportedProblems = Mutex<Set<String>>([])

    public init(client: PostgresClient, policy: GuardrailPolicy = .init(), settings: AppSettings? = nil, timeout: Duration = .seconds(5), logger: Logger) {
        self.client = client
        self.defaults = policy
        self.settings = settings
        self.timeout = timeout
        self.logger = logger
    }

    /// The policy in force: the defaults with `app_settings` applied. Until `app_settings`
    /// could be read once, checks fail (and messages wait) rather than apply defaults an
    /// operator may have changed.
    public func policy() async throws -> GuardrailPolicy {
        guard let settings else { return defaults }
        guard let values = await settings.readValues() else {
            throw DatabaseError(.queryFailed, "app_settings could not be read yet; the guardrails' settings are unknown")
        }
        let (policy, problems) = defaults.applying(values)
        for problem in problems where reportedProblems.withLock({ $0.insert(problem).inserted }) {
            logger.error("ignoring an invalid guardrail setting in app_settings", metadata: ["problem": .string(problem)])
        }
        return policy
    }

    /// Checks `message` against every guardrail. Throws when Postgres does not answer within
    /// `timeout` (the caller defers the message).
    public func check(_ message: ClaimedMessage, logger: Logger) async throws -> Verdict {
        let policy = try await policy()
        let timeout = self.timeout
        let id = message.id
        let workerID = message.claim.workerID
        return try await withTimeLimit(
            timeout,
            onTimeout: { DatabaseError(.queryFailed, "guardrail check: no answer from Postgres within \(timeout)") },
            // A check the caller stopped waiting for may still commit a counted contact.
            whenAbandoned: { [self] late in
                if case .allowed(let admission) = late { await release(admission, logger: logger) }
            }
        ) { [client] in
            try await Self.check(id: id, workerID: workerID, policy: policy, client: client, logger: logger)
        }
    }

    private static func check(id: UUID, workerID: String, policy: GuardrailPolicy, client: PostgresClient, logger: Logger) async throws -> Verdict {
        do {
            let rows = try await client.query(
                """
                SELECT refused_by, contacts, counted, bypassed
                  FROM fila_guardrails_check(\(id), \(policy.contactCapEnabled), \(Int32(clamping: policy.contactCapLimit)), \(workerID))
                """,
                logger: logger
            )
            for try await (refusedBy, contacts, counted, bypassed) in rows.decode((String?, Int32?, Bool, [String]).self) {
                if let refusedBy {
                    guard let guardrail = Guardrail(rawValue: refusedBy) else {
                        throw DatabaseError(.queryFailed, "the guardrail check named an unknown guardrail '\(refusedBy)'")
                    }
                    return .refused(guardrail, contacts: contacts.map(Int.init))
                }
                return .allowed(
                    Admission(messageID: id, counted: counted, contacts: contacts.map(Int.init), bypassed: bypassed.compactMap(Guardrail.init(rawValue:)))
                )
            }
            throw DatabaseError(.queryFailed, "the guardrail check returned no row")
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "guardrail check failed")
        }
    }

    /// Gives back the campaign contact an admission counted: the message surely did not go
    /// out. Best effort: a failure is logged (the doctor then gets one contact fewer this
    /// week, never one more).
    public func release(_ admission: Admission, logger: Logger) async {
        guard admission.counted else { return }
        let id = admission.messageID
        do {
            let timeout = self.timeout
            _ = try await withTimeLimit(
                timeout,
                onTimeout: { DatabaseError(.queryFailed, "guardrail release: no answer from Postgres within \(timeout)") }
            ) { [client] in
                try await client.query("SELECT fila_guardrails_release(\(id))", logger: logger).collect()
            }
        } catch {
            logger.warning("giving back a campaign contact failed; it stays counted", metadata: ["error": .string(String(reflecting: error))])
        }
    }
}
