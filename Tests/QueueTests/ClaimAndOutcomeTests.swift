import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

@Suite("Claim and fenced outcomes", .migratedDatabase)
struct ClaimAndOutcomeTests {
    @Test func claimsByPriorityThenScheduleAndSkipsFutureRows() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        var later = message(1)
        later.agendarPara = Date().addingTimeInterval(3600)
        let ids = try await queue.enqueue(
            [message(2, prioridade: 0), message(3, prioridade: 10), later, message(4, prioridade: -5), message(5, prioridade: 10)],
            logger: logger
        ).map(\.id)
        try await queue.registerWorker("w1")
        let claimed = try await queue.claim(workerID: "w1", limit: 10, logger: logger)
        // Priority first; equal priority and schedule fall back to id order.
        #expect(claimed.count == 4)
        #expect(Set(claimed.prefix(2).map(\.id)) == [ids[1], ids[4]])
        #expect(claimed[0].id.uuidString < claimed[1].id.uuidString)
        #expect(claimed.suffix(2).map(\.id) == [ids[0], ids[3]])
        #expect(claimed.allSatisfy { $0.claim.workerID == "w1" && $0.tentativas == 0 })
        let row = try await queue.row(ids[1])
        #expect(row.status == "processando")
        #expect(row.workerID == "w1")
        // Nothing due is left; the future row stays pending.
        #expect(try await queue.claim(workerID: "w1", limit: 10, logger: logger).isEmpty)
        #expect(try await queue.row(ids[2]).status == "pendente")
    }

    @Test func concurrentClaimsNeverShareARow() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<2000).map { message($0) }, logger: logger)
        let claims = try await withThrowingTaskGroup(of: [UUID].self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var mine: [UUID] = []
                    while true {
                        let batch = try await queue.claim(workerID: "w\(worker)", limit: 37, logger: logger)
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.id)
                    }
                }
            }
            var all: [UUID] = []
            for try await ids in group { all += ids }
            return all
        }
        #expect(claims.count == 2000)
        #expect(Set(claims).count == 2000)
    }

    @Test func sentRecordsTheProviderAndTime() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        let claimed = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        let report = try await queue.finish(
            [AttemptResult(messageID: id, claim: claimed.claim, resolution: .sent(provider: "evolution", providerMessageID: "3EB0ABC", chipID: "chip-1"))],
            logger: logger
        )
        #expect(report.written == [id])
        let row = try await queue.client.query(
            "SELECT status, outcome, provider, provider_message_id, chip_id, enviada_em IS NOT NULL, worker_id, tentativas FROM fila_mensagens WHERE id = \(id)",
            logger: logger
        ).collect().first!.decode((String, String, String, String, String, Bool, String, Int32).self)
        #expect(row.0 == "enviada")
        #expect(row.1 == "SENT")
        #expect(row.2 == "evolution" && row.3 == "3EB0ABC" && row.4 == "chip-1")
        #expect(row.5)
        #expect(row.6 == "w1")
        #expect(row.7 == 0)
    }

    @Test func aRetryBurnsAnAttemptAndBacksOffUntilTheLastOneFails() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        var single = message(1)
        single.maxTentativas = 2
        let id = try await queue.enqueue(single, logger: logger).id

        let first = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        _ = try await queue.finish(
            [AttemptResult(messageID: id, claim: first.claim, resolution: .retry(outcome: .failedProvider, reasonCode: "http_503", error: "503 Service Unavailable", retryAfter: .seconds(90)))],
            logger: logger
        )
        var row = try await queue.row(id)
        #expect(row.status == "pendente")
        #expect(row.tentativas == 1)
        #expect(row.outcome == "FAILED_PROVIDER")
        #expect(row.reason == "http_503")
        #expect(row.workerID == nil)
        #expect(row.dueInSeconds > 85 && row.dueInSeconds <= 90)

        // Make it due again (time is a parameter), then fail its last attempt.
        try await queue.execute("UPDATE fila_mensagens SET agendar_para = now() - interval '1 second'")
        let second = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        #expect(second.tentativas == 1)
        _ = try await queue.finish(
            [AttemptResult(messageID: id, claim: second.claim, resolution: .retry(outcome: .failedTimeout, reasonCode: "timeout", error: "no answer in 30 s", retryAfter: .seconds(90)))],
            logger: logger
        )
        row = try await queue.row(id)
        #expect(row.status == "erro")
        #expect(row.tentativas == 2)
        #expect(row.outcome == "FAILED_TIMEOUT")
    }

    @Test func aPermanentFailureEndsInErro() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        let claimed = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        _ = try await queue.finish(
            [AttemptResult(messageID: id, claim: claimed.claim, resolution: .fail(outcome: .failedValidation, reasonCode: "not_on_whatsapp", error: "exists:false"))],
            logger: logger
        )
        let row = try await queue.row(id)
        #expect(row.status == "erro")
        #expect(row.tentativas == 1)
        #expect(row.outcome == "FAILED_VALIDATION")
    }

    /// A failed call records the provider and chip it went through, and each chip's failed
    /// calls are counted by hour and outcome in the same statement; a fenced outcome (its claim
    /// no longer holds) counts nothing, and a failure without a chip adds no counter row.
    @Test func failedCallsRecordTheirChipAndAreCounted() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        let ids = try await queue.enqueue((1...5).map { message($0) }, logger: logger).map(\.id)
        try await queue.registerWorker("w1")
        let claimed = try await queue.claim(workerID: "w1", limit: 5, logger: logger)
        try #require(claimed.count == 5)
        let chipA = AttemptRoute(provider: "evolution", chipID: "chip-a")
        // claimed[4]'s claim is void before its outcome arrives.
        try await client.query("UPDATE fila_mensagens SET status = 'cancelada', worker_id = NULL WHERE id = \(claimed[4].id)", logger: logger)
        let report = try await queue.finish(
            [
                AttemptResult(messageID: claimed[0].id, claim: claimed[0].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "evolution:http_500", error: "500", retryAfter: .seconds(60), route: chipA)),
                AttemptResult(messageID: claimed[1].id, claim: claimed[1].claim, resolution: .retry(outcome: .failedTimeout, reasonCode: "evolution:timeout", error: "timeout", retryAfter: .seconds(60), route: chipA)),
                AttemptResult(messageID: claimed[2].id, claim: claimed[2].claim, resolution: .fail(outcome: .failedValidation, reasonCode: "evolution:not_on_whatsapp", error: "no", route: AttemptRoute(provider: "zapi", chipID: "chip-z"))),
                AttemptResult(messageID: claimed[3].id, claim: claimed[3].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "evolution:http_500", error: "500", retryAfter: .seconds(60), route: AttemptRoute(provider: "evolution", chipID: nil))),
                AttemptResult(messageID: claimed[4].id, claim: claimed[4].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "evolution:http_500", error: "500", retryAfter: .seconds(60), route: chipA)),
            ],
            logger: logger
        )
        #expect(report.written == Set(claimed.prefix(4).map(\.id)) && report.fenced == [claimed[4].id])
        let recorded = try await client.query(
            "SELECT id, coalesce(provider, '-'), coalesce(chip_id, '-') FROM fila_mensagens WHERE id = ANY(\(ids)) ORDER BY id",
            logger: logger
        ).collect().map { try $0.decode((UUID, String, String).self) }
        let byID = Dictionary(uniqueKeysWithValues: recorded.map { ($0.0, "\($0.1)/\($0.2)") })
        #expect(byID[claimed[0].id] == "evolution/chip-a")
        #expect(byID[claimed[2].id] == "zapi/chip-z")
        #expect(byID[claimed[3].id] == "evolution/-")
        #expect(byID[claimed[4].id] == "-/-")
        let counts = try await client.query(
            "SELECT chip_id, outcome, falhas::int8, hora = date_trunc('hour', now()) FROM chip_falhas ORDER BY chip_id, outcome",
            logger: logger
        ).collect().map { try $0.decode((String, String, Int, Bool).self) }
        #expect(counts.map { "\($0.0) \($0.1) \($0.2)" } == ["chip-a FAILED_PROVIDER 1", "chip-a FAILED_TIMEOUT 1", "chip-z FAILED_VALIDATION 1"])
        #expect(counts.allSatisfy { $0.3 })

        // The next batch adds to the hour's counter.
        try await client.query("UPDATE fila_mensagens SET agendar_para = now() WHERE id = \(claimed[0].id)", logger: logger)
        let again = try await queue.claim(workerID: "w1", limit: 1, logger: logger)
        try #require(again.map(\.id) == [claimed[0].id])
        _ = try await queue.finish(
            [AttemptResult(messageID: again[0].id, claim: again[0].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "x", error: "x", retryAfter: .seconds(60), route: chipA))],
            logger: logger
        )
        let total = try await client.query("SELECT falhas::int8 FROM chip_falhas WHERE chip_id = 'chip-a' AND outcome = 'FAILED_PROVIDER'", logger: logger)
            .collect().first?.decode(Int.self)
        #expect(total == 2)
    }

    /// Postgres refuses NUL in text: a sender's odd error text must not fail the batch.
    @Test func nulCharactersInWhatASenderReportsAreDropped() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        let claimed = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        let report = try await queue.finish(
            [AttemptResult(messageID: id, claim: claimed.claim, resolution: .fail(outcome: .failedProvider, reasonCode: "x:\u{0}y", error: "bad\u{0}body"))],
            logger: logger
        )
        #expect(report.written == [id])
        let row = try await queue.row(id)
        #expect(row.reason == "x:y")
    }

    @Test func aDeferralKeepsTheAttemptCount() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        let claimed = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        _ = try await queue.finish(
            [AttemptResult(messageID: id, claim: claimed.claim, resolution: .deferred(outcome: .failedCircuitOpen, reasonCode: "circuit_open:evolution", until: .seconds(60)))],
            logger: logger
        )
        let row = try await queue.row(id)
        #expect(row.status == "pendente")
        #expect(row.tentativas == 0)
        #expect(row.outcome == "FAILED_CIRCUIT_OPEN")
        #expect(row.reason == "circuit_open:evolution")
        #expect(row.dueInSeconds > 55 && row.dueInSeconds <= 60)
    }

    /// A worker presumed dead whose rows were rescued cannot later complete or fail them.
    @Test func aRescuedRowCannotBeFinishedByItsOldWorker() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let ids = try await queue.enqueue([message(1), message(2)], logger: logger).map(\.id)
        try await queue.registerWorker("old", lastSeenSecondsAgo: 600)
        let claimed = try await queue.claim(workerID: "old", limit: 2, logger: logger)
        // Another worker, beating all along, vouches for the database.
        try await queue.registerWorker("new")
        try #require(try await queue.rescueLostWorkers(logger: logger).rescued == 2)

        // It picks one of them up again.
        let reclaimed = try await queue.claim(workerID: "new", limit: 1, logger: logger)
        try #require(reclaimed.count == 1)

        let report = try await queue.finish(
            [
                AttemptResult(messageID: claimed[0].id, claim: claimed[0].claim, resolution: .sent(provider: "sandbox", providerMessageID: nil, chipID: nil)),
                AttemptResult(messageID: claimed[1].id, claim: claimed[1].claim, resolution: .fail(outcome: .failedProvider, reasonCode: "x", error: "x")),
            ],
            logger: logger
        )
        #expect(report.written.isEmpty)
        #expect(report.fenced == Set(ids))
        let taken = try await queue.row(reclaimed[0].id)
        #expect(taken.status == "processando" && taken.workerID == "new" && taken.tentativas == 0)
        let other = ids.first { $0 != reclaimed[0].id }!
        let waiting = try await queue.row(other)
        #expect(waiting.status == "pendente" && waiting.outcome == "FAILED_WORKER_LOST" && waiting.tentativas == 0)
    }

    /// The same worker claiming a row again gets a new claim; the old one is void.
    @Test func anOldClaimOfTheSameWorkerIsFenced() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        try await queue.registerWorker("w1")
        let first = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        _ = try await queue.finish([AttemptResult(messageID: id, claim: first.claim, resolution: .deferred(outcome: .failedRateLimit, reasonCode: "budget", until: .zero))], logger: logger)
        let second = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        #expect(second.tentativas == first.tentativas)
        let stale = try await queue.finish([AttemptResult(messageID: id, claim: first.claim, resolution: .sent(provider: nil, providerMessageID: nil, chipID: nil))], logger: logger)
        #expect(stale.fenced == [id])
        let current = try await queue.finish([AttemptResult(messageID: id, claim: second.claim, resolution: .sent(provider: nil, providerMessageID: nil, chipID: nil))], logger: logger)
        #expect(current.written == [id])
    }
}
