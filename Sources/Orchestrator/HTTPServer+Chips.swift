import Hummingbird
import Logging
import Outbound
import Primitives

/// `GET /chips` (seed T05.4): usage per chip, as `ops.chips_uso` shows it. Public like the
/// health endpoints: ids, names, counts and states, never an instance's credentials.
extension HealthAPI {
    struct ChipsBody: ResponseEncodable, Sendable {
        let chips: [ChipUsage]
    }

    func registerChips(on router: Router<APIRequestContext>) {
        router.get("/chips") { _, _ in
            do {
                return ChipsBody(chips: try await ChipUsage.all(client: client, logger: logger))
            } catch {
                throw APIError(status: .serviceUnavailable, code: "database_unavailable", message: "the database did not answer; try again")
            }
        }
    }

    /// Each chip in service's score for `/health/score`; nil when the chips cannot be read
    /// within the checks' time limit.
    func chipScores() async -> [String: Int]? {
        let limit = checkTimeLimit ?? .milliseconds(1500)
        let usage = try? await withTimeLimit(limit, onTimeout: { HealthTimeout() }) { [client, logger] in
            try await ChipUsage.all(client: client, logger: logger)
        }
        guard let usage else { return nil }
        var scores: [String: Int] = [:]
        for chip in usage {
            if let score = chip.score { scores[chip.id] = score }
        }
        return scores
    }
}

private struct HealthTimeout: Error {}
