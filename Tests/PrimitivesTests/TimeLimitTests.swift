import Primitives
import Synchronization
import Testing

private struct TookTooLong: Error {}

@Suite("Time limits, first results and wake signals")
struct TimeLimitTests {
    @Test func anAnswerWithinTheLimitIsReturned() async throws {
        let value = try await withTimeLimit(.seconds(30), onTimeout: { TookTooLong() }) { 42 }
        #expect(value == 42)
    }

    /// The caller gets its answer on time even from a call that ignores cancellation, and a
    /// late success is handed to `whenAbandoned` so its work can be undone.
    @Test func aCallThatNeverAnswersTimesOutAndItsLateResultIsHandedOver() async throws {
        let release = FirstResult<Void>()
        let abandoned = FirstResult<Int>()
        await #expect(throws: TookTooLong.self) {
            try await withTimeLimit(.milliseconds(50), onTimeout: { TookTooLong() }, whenAbandoned: { abandoned.offer($0) }) {
                await release.value  // ignores cancellation
                return 7
            }
        }
        release.offer(())
        #expect(await abandoned.value == 7)
    }

    /// A late result that is wanted is not lost to cancellation: the call runs on (a claim
    /// cancelled half-read would leave its committed rows with nobody to hand them back).
    @Test func aCallWhoseLateResultIsWantedRunsToItsEnd() async throws {
        let abandoned = FirstResult<Int>()
        await #expect(throws: TookTooLong.self) {
            try await withTimeLimit(.milliseconds(20), onTimeout: { TookTooLong() }, whenAbandoned: { abandoned.offer($0) }) {
                try await Task.sleep(for: .milliseconds(300))  // throws if cancelled
                return 9
            }
        }
        #expect(await abandoned.value == 9)
    }

    @Test func aCallWhoseLateResultIsNotWantedIsCancelled() async throws {
        let ended = FirstResult<Bool>()
        await #expect(throws: TookTooLong.self) {
            try await withTimeLimit(.milliseconds(20), onTimeout: { TookTooLong() }) { () async throws -> Int in
                do {
                    try await Task.sleep(for: .seconds(60))
                    ended.offer(false)
                } catch {
                    ended.offer(Task.isCancelled)
                }
                return 1
            }
        }
        #expect(await ended.value)
    }

    @Test func errorsOfTheCallPassThrough() async throws {
        struct Broken: Error {}
        await #expect(throws: Broken.self) {
            try await withTimeLimit(.seconds(30), onTimeout: { TookTooLong() }) { () async throws -> Int in throw Broken() }
        }
    }

    @Test func theFirstOfferWinsAndLaterOnesAreIgnored() async {
        let race = FirstResult<String>()
        let waiter = Task { await race.value }
        #expect(race.offer("first"))
        #expect(!race.offer("second"))
        #expect(await waiter.value == "first")
        #expect(await race.value == "first")
    }

    @Test func signalsWhileNobodyWaitsCollapseIntoOneWakeUp() async {
        let wake = WakeSignal()
        var waiter = wake.makeWaiter()
        #expect(wake.takeWork())  // a new signal starts out saying "look for work"
        #expect(!wake.takeWork())
        for _ in 0..<100 { wake.signalWork() }
        wake.signal()
        #expect(await waiter.next() != nil)
        #expect(wake.takeWork())
        wake.finish()
        // One buffered wake-up at most, then the end: a hundred signals were not a hundred wake-ups.
        var remaining = 0
        while await waiter.next() != nil { remaining += 1 }
        #expect(remaining == 0)
    }

    @Test func aFreedSlotIsNotWork() async {
        let wake = WakeSignal()
        _ = wake.takeWork()
        var waiter = wake.makeWaiter()
        wake.signal()
        #expect(await waiter.next() != nil)
        #expect(!wake.takeWork())
    }
}

@Suite("Duration and JSON helpers")
struct ValueHelperTests {
    @Test func durationsInSecondsKeepTheirFractions() {
        #expect(Duration.seconds(90).seconds == 90)
        #expect(Duration.milliseconds(1500).seconds == 1.5)
        #expect(Duration.zero.seconds == 0)
    }

    @Test func unicodeEscapeDigitsAreReadInEitherCase() {
        let text = Array("00e9D83Dzz12".utf8)
        #expect(JSONUnicodeEscape.codeUnit(in: text, at: 0) == 0xE9)
        #expect(JSONUnicodeEscape.codeUnit(in: text, at: 4) == 0xD83D)
        #expect(JSONUnicodeEscape.codeUnit(in: text, at: 8) == nil)  // not hex
        #expect(JSONUnicodeEscape.codeUnit(in: text, at: 10) == nil)  // too short
    }

    @Test func jsonValuesRoundTripAsCompactSortedText() {
        let value: JSONValue = ["b": [1, 2.5, "x", nil, true], "a": ["n": 0]]
        #expect(value.text == #"{"a":{"n":0},"b":[1,2.5,"x",null,true]}"#)
        #expect(JSONValue(parsing: value.text) == value)
        #expect(JSONValue(parsing: "{not json") == nil)
        #expect(JSONValue.number(3).integerValue == 3)
        #expect(JSONValue.number(3.5).integerValue == nil)
        #expect(value["b"]?.stringValue == nil)
    }
}
