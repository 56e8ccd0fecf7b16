import Logging
import Observability
import PostgresNIO
import Primitives

extension BuiltinJobs {
    /// `verificar-erros-acumulados`: the rules `erros_acumulados` and `mensagens_nao_enviadas`,
    /// both read through the recent-outcomes index (`outcome_at`, outcomes only).
    static func checkErrors(_ context: JobContext) async throws -> JSONValue {
        let alerts = AlertStore(client: context.client)

        let errorSettings = try await alerts.settings(for: ErrorsAlert.rule, logger: context.logger)
        let limit = errorSettings.integer("limit", default: ErrorsAlert.limit, in: 0...1_000_000)
        let errorWindow = errorSettings.integer("window_seconds", default: ErrorsAlert.windowSeconds, in: 60...86_400)
        let errors = try await breakdown(
            context,
            windowSeconds: errorWindow,
            condition: "outcome = ANY($2::text[])",
            outcomes: ErrorsAlert.outcomes
        )
        let errorTotal = errors.reduce(0) { $0 + $1.count }
        try await alerts.report(
            rule: ErrorsAlert.rule,
            firing: errorTotal > limit ? [ErrorsAlert.alert(total: errorTotal, breakdown: errors, limit: limit, windowSeconds: errorWindow)] : [],
            cooldown: errorSettings.cooldown(default: ErrorsAlert.cooldown),
            resolveAfter: errorSettings.resolveAfter(),
            logger: context.logger
        )

        let unsentSettings = try await alerts.settings(for: UnsentAlert.rule, logger: context.logger)
        let unsentWindow = unsentSettings.integer("window_seconds", default: UnsentAlert.windowSeconds, in: 60...86_400)
        let unsent = try await breakdown(
            context,
            windowSeconds: unsentWindow,
            condition: "(status = 'erro' OR (status = 'cancelada' AND outcome = ANY($2::text[])))",
            outcomes: ["FAILED_EXPIRED"]
        )
        let unsentTotal = unsent.reduce(0) { $0 + $1.count }
        try await alerts.report(
            rule: UnsentAlert.rule,
            firing: unsentTotal > 0 ? [UnsentAlert.alert(total: unsentTotal, breakdown: unsent, windowSeconds: unsentWindow)] : [],
            cooldown: unsentSettings.cooldown(default: UnsentAlert.cooldown),
            resolveAfter: unsentSettings.resolveAfter(),
            logger: context.logger
        )
        return [
            "erros": .integer(errorTotal),
            "erros_limite": .integer(limit),
            "erros_acumulados": .bool(errorTotal > limit),
            "nao_enviadas": .integer(unsentTotal),
        ]
    }

    /// The rows whose attempt ended in the last `windowSeconds` and match `condition` (a
    /// fixed SQL fragment from this file, with `$2` the outcomes), counted by outcome and
    /// reason, most frequent first.
    private static func breakdown(
        _ context: JobContext,
        windowSeconds: Int,
        condition: StaticString,
        outcomes: [String]
    ) async throws -> [(outcome: String, reason: String, count: Int)] {
        var bindings = PostgresBindings()
        bindings.append(Double(windowSeconds))
        bindings.append(outcomes)
        let query = PostgresQuery(
            unsafeSQL: """
                SELECT outcome, coalesce(outcome_reason_code, ''), count(*)::bigint
                  FROM fila_mensagens
                 WHERE outcome IS NOT NULL AND outcome_at > now() - make_interval(secs => $1)
                   AND \(condition)
                 GROUP BY 1, 2
                 ORDER BY 3 DESC, 1, 2
                """,
            binds: bindings
        )
        var rows: [(outcome: String, reason: String, count: Int)] = []
        for try await (outcome, reason, count) in try await context.client.query(query, logger: context.logger).decode((String, String, Int).self) {
            rows.append((outcome, reason, count))
        }
        return rows
    }
}
