import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

/// `JSONBText` says a text is fine exactly when Postgres casts it to a jsonb object: each
/// candidate is checked here and cast by the server.
@Suite("JSONBText agrees with Postgres's jsonb")
struct JSONBTextTests {
    let logger = TestDatabase.logger

    static let candidates: [String] = [
        "{}", " {} ", "{\"a\":1}", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":1}}", "{\"a\":[1,2,]}", "{\"a\":[]}",
        "{\"a\":{\"b\":{\"c\":[true,false,null]}}}", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":truex}", "{\"a\":\"x\"", "",
        "[]", "1", "\"x\"", "null", "{\"a\":1} {\"b\":2}", "{\"a\":1}\u{0B}", "\t{\"a\":1}\n",
        // Strings and escapes.
        #"{"a":"\u0000"}"#, #"{"\u0000":1}"#, #"{"a":"x\u0000"}"#, #"{"a":"\U0041"}"#, #"{"a":"\u00e9\u00E9"}"#,
        #"{"a":"\ud83d\ude00"}"#, #"{"a":"\ud83d"}"#, #"{"a":"\ude00"}"#, #"{"a":"\ud83d\ud83d"}"#, #"{"a":"\ud83dx"}"#,
        #"{"a":"\ud83d\n"}"#, #"{"a":"\u12"}"#, #"{"a":"\x"}"#, #"{"a":"\/\b\f\n\r\t\"\\"}"#, "{\"a\":\"tab\there\"}",
        "{\"a\":\"raw\u{0}nul\"}", "{\"a\":\"🇧🇷 é ç\"}",
        // Numbers.
        #"{"a":-0}"#, #"{"a":01}"#, #"{"a":-01}"#, #"{"a":.5}"#, #"{"a":5.}"#, #"{"a":1e}"#, #"{"a":1e+}"#, #"{"a":-}"#,
        #"{"a":1E+2}"#, #"{"a":1e-2}"#, #"{"a":+1}"#, #"{"a":0x10}"#, #"{"a":1.5e3x}"#,
        #"{"a":1e131071}"#, #"{"a":1e131072}"#, #"{"a":123.456e131069}"#, #"{"a":123.456e131070}"#,
        #"{"a":0.00123e131074}"#, #"{"a":0.00123e131075}"#, #"{"a":1.5e-16382}"#, #"{"a":1.5e-16383}"#,
        #"{"a":1e-16383}"#, #"{"a":0e-16383}"#, #"{"a":0e-16384}"#, #"{"a":0e1073741822}"#, #"{"a":0e1073741823}"#,
        #"{"a":1e-1073741822}"#, #"{"a":1e99999999999999999999999}"#, #"{"a":1.0000000e-16376}"#, #"{"a":1.0000000e-16377}"#,
        #"{"a":1e00000000000000000000000000002}"#,
        // Deep nesting, within 16 KiB.
        "{\"a\":" + String(repeating: "[", count: 7_000) + String(repeating: "]", count: 7_000) + "}",
        "{\"a\":" + String(repeating: "[", count: 7_000) + String(repeating: "]", count: 6_999) + "}",
        String(repeating: "{\"a\":", count: 2_000) + "1" + String(repeating: "}", count: 2_000),
    ]

    @Test(.emptyDatabase) func agreesWithTheServer() async throws {
        let client = try TestDatabase.current.client
        for text in Self.candidates {
            let problem = JSONBText.problem(in: text, requireObject: true)
            let stored: Bool
            do {
                let rows = try await client.query("SELECT jsonb_typeof(\(text)::jsonb) = 'object'", logger: logger).collect()
                stored = try rows.first?.decode(Bool.self) ?? false
            } catch {
                stored = false
            }
            #expect((problem == nil) == stored, "\(text.prefix(80)): \(problem ?? "accepted"), the server \(stored ? "stores it" : "refuses it")")
        }
    }

    @Test func reasonsNameThePlaceNotTheText() {
        #expect(JSONBText.problem(in: #"{"segredo":"a\u0000"}"#, requireObject: true) == #"contains \u0000 (NUL), which Postgres cannot store (at byte 14)"#)
        #expect(JSONBText.problem(in: "[1]", requireObject: true) == "must be a JSON object")
        #expect(JSONBText.problem(in: "[1]", requireObject: false) == nil)
        #expect(JSONBText.problem(in: #"{"segredo":01}"#, requireObject: true) == "is not valid JSON (at byte 12)")
        #expect(JSONBText.problem(in: #"{"segredo":"#, requireObject: true) == "is not valid JSON (it ends too early)")
        #expect(JSONBText.problem(in: #"{"a":1e131072}"#, requireObject: true) == "has a number outside the range Postgres's numeric can store (at byte 6)")
    }
}
