#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives

/// How long history is kept (job `limpar-historico`): `job_executions`, the heartbeats of
/// processes gone for good, `alert_events` and `ops_audit`. Each age is an `app_settings` row
/// (`retention.*`), read at every run; a value that is missing, not a whole number or out of
/// its range gives the default, and the run's result names it.
extension BuiltinJobs {
    /// One `retention.*` setting: its key, default and allowed range, in its unit.
    struct RetentionSetting: Sendable {
        let key: String
        let defaultValue: Int
        let range: ClosedRange<Int>

        static let jobExecutionsDays = RetentionSetting(key: "retention.job_executions_days", defaultValue: 30, range: 1...3650)
        static let heartbeatsHours = RetentionSetting(key: "retention.worker_heartbeats_hours", defaultValue: 24, range: 1...87_600)
        static let alertEventsDays = RetentionSetting(key: "retention.alert_events_days", defaultValue: 365, range: 1...3650)
        static let auditDays = RetentionSetting(key: "retention.ops_audit_days", defaultValue: 365, range: 1...3650)
        static let all = [jobExecutionsDays, heartbeatsHours, alertEventsDays, auditDays]
    }

    /// Rows deleted per statement: each batch is its own short transaction.
    static let retentionBatch = 5000

    static func deleteOldHistory(_ context: JobContext) async throws -> JSONValue {
        let (values, ignored) = try await retentionSettings(context)
        let logger = context.logger
        let client = context.client

        // Runs older than the setting, except what the scheduler and the late-job alert read:
        // open runs, and each job's latest run and latest success, however old.
        let days = values[RetentionSetting.jobExecutionsDays.key]!
        let kept = try await client.query(
            """
            SELECT id FROM (SELECT DISTINCT ON (job_name) id FROM job_executions
                             ORDER BY job_name, scheduled_for DESC, created_at DESC) latest
            UNION
            SELECT id FROM (SELECT DISTINCT ON (job_name) id FROM job_executions WHERE status = 'success'
                             ORDER BY job_name, finished_at DESC) succeeded
            """,
            logger: logger
        ).collect().map { try $0.decode(UUID.self) }
        // Ids and whole numbers only go into these conditions: nothing from outside.
        let keptList = kept.map { "'\($0.uuidString)'" }.joined(separator: ",")
        let executions = try await deleteInBatches(
            from: "job_executions",
            where: """
                created_at < now() - make_interval(days => \(days)) AND status NOT IN ('pending', 'running')
                \(kept.isEmpty ? "" : "AND id NOT IN (\(keptList))")
                """,
            context
        )

        // Processes silent (or stopped) for longer than the setting, unless a message still
        // names one as its holder: that row is the rescue's to return first.
        let hours = values[RetentionSetting.heartbeatsHours.key]!
        let heartbeats = try await deleteInBatches(
            from: "worker_heartbeats",
            where: """
                last_seen_at < now() - make_interval(hours => \(hours))
                AND NOT EXISTS (SELECT 1 FROM fila_mensagens m WHERE m.status = 'processando' AND m.worker_id = worker_heartbeats.id)
                """,
            context
        )

        // Notifications older than the setting, except those still waiting to be delivered.
        let alertDays = values[RetentionSetting.alertEventsDays.key]!
        let events = try await deleteInBatches(
            from: "alert_events", where: "created_at < now() - make_interval(days => \(alertDays)) AND status <> 'pending'", context
        )

        // The interventions' audit.
        let auditDays = values[RetentionSetting.auditDays.key]!
        let audit = try await deleteInBatches(from: "ops_audit", where: "feito_em < now() - make_interval(days => \(auditDays))", context)

        var result: [String: JSONValue] = [
            "execucoes_removidas": .integer(executions),
            "heartbeats_removidos": .integer(heartbeats),
            "alertas_removidos": .integer(events),
            "auditoria_removida": .integer(audit),
        ]
        if !ignored.isEmpty {
            logger.warning(
                "retention settings ignored: not a whole number in range; using the defaults",
                metadata: ["settings": .string(ignored.joined(separator: ","))]
            )
            result["configuracoes_ignoradas"] = .array(ignored.map { .string($0) })
        }
        return .object(result)
    }

    /// Deletes `table`'s rows matching `condition`, `retentionBatch` at a time, each batch its
    /// own statement; returns how many. Both are SQL written here, never input.
    static func deleteInBatches(from table: String, where condition: String, _ context: JobContext) async throws -> Int {
        try await inBatches(of: retentionBatch) { size in
            try await context.client.query(
                """
                WITH gone AS (
                    DELETE FROM \(unescaped: table)
                     WHERE id IN (SELECT id FROM \(unescaped: table) WHERE \(unescaped: condition) LIMIT \(Int32(size)))
                    RETURNING 1)
                SELECT count(*) FROM gone
                """,
                logger: context.logger
            ).collect().first!.decode(Int.self)
        }
    }

    /// Each `retention.*` setting's value in force, and the keys whose stored value was
    /// unusable (so the default applies).
    static func retentionSettings(_ context: JobContext) async throws -> (values: [String: Int], ignored: [String]) {
        var stored: [String: JSONValue] = [:]
        do {
            let rows = try await context.client.query(
                "SELECT key, value::text FROM app_settings WHERE starts_with(key, 'retention.')",
                logger: context.logger
            )
            for try await (key, text) in rows.decode((String, String).self) {
                stored[key] = JSONValue(parsing: text)
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "reading the retention settings")
        }
        var values: [String: Int] = [:]
        var ignored: [String] = []
        for setting in RetentionSetting.all {
            values[setting.key] = setting.defaultValue
            guard let value = stored[setting.key] else { continue }
            if let number = value.integerValue, setting.range.contains(number) {
                values[setting.key] = number
            } else {
                ignored.append(setting.key)
            }
        }
        return (values, ignored.sorted())
    }
}
