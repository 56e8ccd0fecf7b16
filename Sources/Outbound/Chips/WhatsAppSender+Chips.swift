import Database
import Logging
import Primitives
import Queue
import Resilience

/// Sending through the chips table (seed T05.1–T05.3, T02.4).
///
/// Per message, after the doctor's rate limit:
/// 1. the rotation is every chip that is active, not reported disconnected and whose breaker
///    admits a call, the default chip excepted;
/// 2. Postgres reserves the least recently used of them that is under its daily limit and past
///    its minimum interval (`ChipStore.reserve`);
/// 3. when none can, the default chip under the same rules (T05.3);
/// 4. the call goes through the chip's own breaker. A breaker that refuses it (opened by
///    another worker meanwhile) gives the reservation back and the next chip is tried, across
///    providers (an Evolution outage falls through to Z-API chips). A call that was made is
///    never followed by another chip's call: it may have delivered.
///
/// When no chip can send: every candidate's circuit open → deferred FAILED_CIRCUIT_OPEN as
/// without chips; else deferred FAILED_NO_CHIP until the soonest chip may send. Neither burns
/// an attempt, and the doctor's budget is given back.
extension WhatsAppSender {
    /// How long a message waits when no chip will be able to send it today (all at their
    /// limit, disconnected or paused): a chip may be resumed, reconnect or be added meanwhile.
    static let noChipRetry: Duration = .seconds(300)

    /// The roster's list, or the deferral of a message that cannot know its chips.
    func chipSnapshot(_ chips: ChipRoster, logger: Logger) async -> Result<ChipRoster.Snapshot, DeferredSend>? {
        do {
            return .success(try await chips.snapshot(logger: logger))
        } catch {
            logger.error("the chips cannot be read; deferring the message", metadata: ["error": .string(String(reflecting: error))])
            metrics.recordNoChip(reasonCode: "no_chip:unreadable")
            return .failure(DeferredSend(.deferred(outcome: .failedNoChip, reasonCode: "no_chip:unreadable", until: .seconds(30) + Jitter.full.apply(to: .seconds(30)))))
        }
    }

    func sendThroughChips(_ message: ClaimedMessage, snapshot: ChipRoster.Snapshot, budget: RateLimiter.Decision?, logger: Logger) async -> SendResult {
        let routes = Dictionary(snapshot.entries.map { ($0.chip.id, $0) }, uniquingKeysWith: { first, _ in first })
        var openCircuits: [(name: String, retryAfter: Duration)] = []
        var excluded: Set<String> = []
        var soonest: Duration?
        // Chips other than those whose breaker refuses calls: the ones a reservation may pick.
        func candidates(_ entries: [ChipRoster.Entry]) -> [String] {
            entries.compactMap { entry in
                guard entry.chip.isSelectable, !excluded.contains(entry.chip.id) else { return nil }
                if case .unavailable(_, let wait) = entry.route.breaker.readiness() {
                    openCircuits.append((entry.route.breaker.name, wait))
                    excluded.insert(entry.chip.id)
                    return nil
                }
                return entry.chip.id
            }
        }
        let rotation = snapshot.entries.filter { !$0.chip.isDefault }
        let fallback = snapshot.entries.filter(\.chip.isDefault)

        guard let store = chips?.store else {
            metrics.recordNoChip(reasonCode: "no_chip:none_eligible")
            return .deferred(outcome: .failedNoChip, reasonCode: "no_chip:none_eligible", until: Self.noChipRetry)
        }
        for (pool, isFallback) in [(rotation, false), (fallback, true)] {
            pool: while true {
                let ids = candidates(pool)
                if ids.isEmpty { break }
                let reservation: ChipStore.Reservation
                do {
                    switch try await store.reserve(among: ids, logger: logger) {
                    case .reserved(let reserved):
                        reservation = reserved
                    case .none(let retryAfter):
                        if let retryAfter { soonest = min(soonest ?? retryAfter, retryAfter) }
                        break pool
                    }
                } catch {
                    logger.error("chip reservation failed; deferring the message", metadata: ["error": .string(String(reflecting: error))])
                    metrics.recordNoChip(reasonCode: "no_chip:unreadable")
                    await refund(budget, logger: logger)
                    return .deferred(outcome: .failedNoChip, reasonCode: "no_chip:unreadable", until: .seconds(30) + Jitter.full.apply(to: .seconds(30)))
                }
                guard let entry = routes[reservation.chipID] else {
                    // Cannot happen: the reservation picks among the ids given.
                    await release(reservation, logger: logger)
                    excluded.insert(reservation.chipID)
                    continue
                }
                var chipLogger = logger
                chipLogger[metadataKey: "chip.id"] = .string(entry.chip.id)
                switch await attempt(entry.route, chipID: entry.chip.id, message, logger: chipLogger) {
                case .sent(let receipt):
                    if isFallback { chipLogger.info("sent through the default chip: no other chip could send") }
                    return .sent(provider: receipt.provider, providerMessageID: receipt.messageID, chipID: entry.chip.id)
                case .circuitOpen(let error):
                    await release(reservation, logger: logger)
                    openCircuits.append((error.circuit, error.retryAfter))
                    excluded.insert(entry.chip.id)
                case .failed(let result, let surelyNotSent):
                    if surelyNotSent {
                        await release(reservation, logger: logger)
                        await refund(budget, logger: logger)
                    }
                    return result
                }
            }
        }

        // Nothing was sent.
        await refund(budget, logger: logger)
        let selectable = snapshot.entries.filter(\.chip.isSelectable)
        if !openCircuits.isEmpty, openCircuits.count >= selectable.count, soonest == nil {
            let wait = openCircuits.map(\.retryAfter).min() ?? .seconds(60)
            return .deferred(
                outcome: .failedCircuitOpen,
                reasonCode: "circuit_open:" + openCircuits.map(\.name).joined(separator: ","),
                until: wait + Jitter.full.apply(to: circuitDeferralJitter)
            )
        }
        let reason: String
        if selectable.isEmpty {
            reason = "no_chip:none_eligible"
        } else if soonest != nil {
            reason = "no_chip:pacing"
        } else {
            reason = "no_chip:limit_or_disconnected"
        }
        logger.info("no chip can send now; deferred", metadata: ["reason": .string(reason)])
        metrics.recordNoChip(reasonCode: reason)
        let wait = soonest ?? Self.noChipRetry
        // Jitter of a tenth of the wait, so messages deferred together do not come due together.
        return .deferred(outcome: .failedNoChip, reasonCode: reason, until: wait + Jitter.full.apply(to: max(.seconds(1), wait / 10)))
    }

    /// The sender's readiness while the chips table is in use; nil to decide as without chips.
    func chipReadiness() -> SenderReadiness? {
        guard let chips else { return nil }
        guard let snapshot = chips.cached, !snapshot.isEmpty else {
            // No chip (yet): a sender without providers of its own still takes messages, to
            // defer them FAILED_NO_CHIP rather than leave them unexplained.
            return routes.isEmpty ? .ready(limit: nil) : nil
        }
        var limit: Int? = 0
        var retryAfter: Duration?
        for entry in snapshot.entries where entry.chip.isSelectable {
            switch entry.route.breaker.readiness() {
            case .available(let probes):
                if let probes, let current = limit { limit = current + probes } else { limit = nil }
            case .unavailable(_, let wait):
                retryAfter = min(retryAfter ?? wait, wait)
            }
        }
        if limit == 0, let retryAfter {
            return .paused(retryAfter: retryAfter, reason: "every chip's circuit is open")
        }
        // No selectable chip: take messages and defer them FAILED_NO_CHIP.
        return .ready(limit: limit == 0 ? nil : limit)
    }

    private func release(_ reservation: ChipStore.Reservation, logger: Logger) async {
        guard let chips else { return }
        do {
            try await chips.store.release(reservation, logger: logger)
        } catch {
            logger.warning("giving back a chip's reservation failed; its count stays spent", metadata: ["error": .string(String(reflecting: error))])
        }
    }
}

/// A send result that defers the message; wraps it for `Result`.
struct DeferredSend: Error {
    let result: SendResult
    init(_ result: SendResult) { self.result = result }
}
