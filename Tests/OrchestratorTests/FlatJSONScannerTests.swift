import Foundation
import Testing

@testable import Orchestrator

/// The fast JSON-lines path must read every line exactly as the full decoder does, or step
/// aside for it.
@Suite("Fast JSON lines")
struct FlatJSONScannerTests {
    private func fast(_ line: String) -> [String: String]? {
        Array(line.utf8).withUnsafeBytes { MessageFileReader.fastFields($0) }
    }

    private func full(_ line: String) -> [String: String]? {
        try? JSONDecoder().decode(JSONLineObject.self, from: Data(line.utf8)).fields
    }

    @Test(arguments: [
        #"{"cliente_id":"medico-1","telefone":"5521999990001","conteudo":"Olá, doutor","tipo":"resposta"}"#,
        #"  { "cliente_id" : "m" , "telefone":"5521999990001", "conteudo":"x", "tipo":"campanha", "prioridade": -5, "max_tentativas": 0 }  "#,
        #"{"cliente_id":"m","telefone":"1","conteudo":"aspas \" barra \\ barra/ \/ \b\f\n\r\t fim","tipo":"sistema"}"#,
        #"{"cliente_id":"m","telefone":"1","conteudo":"\u00e9\u4e2d\ud83d\ude00 emoji 😀 ação","tipo":"followup"}"#,
        #"{"cliente_id":"m","telefone":"1","conteudo":"x","tipo":"resposta","correlation_id":null,"idempotency_key":"k"}"#,
        #"{"cliente_id":"m","prioridade":"7","telefone":"1","conteudo":"x","tipo":"resposta"}"#,
        #"{}"#,
    ])
    func readsWhatTheDecoderReads(line: String) {
        let quick = fast(line)
        #expect(quick != nil)
        #expect(quick == full(line))
    }

    @Test(arguments: [
        #"{"cliente_id":"m","metadata":{"a":1}}"#,  // nested: the decoder's job
        #"{"cliente_id":"m","prioridade":1.5}"#,  // fraction
        #"{"cliente_id":"m","prioridade":1e3}"#,  // exponent
        #"{"cliente_id":"m","prioridade":007}"#,  // leading zeros: not JSON
        #"{"cliente_id":"m","urgente":true}"#,  // boolean
        #"{"cliente_id":"m","cor":"azul"}"#,  // unknown field: the decoder words it
        #"{"cliente_id":"m","cliente_id":"n"}"#,  // duplicate key
        #"{"cliente_id":"m","conteudo":5}"#,  // number where text goes
        #"{"cliente_id":"m"}x"#,  // trailing garbage
        #"{"cliente_id":"m",}"#,  // trailing comma
        #"{"cliente_id":"a\qb"}"#,  // bad escape
        #"{"cliente_id":"\ud83d"}"#,  // lone surrogate
        "{\"cliente_id\":\"tab\there\"}",  // raw control character
        #"["cliente_id"]"#,  // not an object
        #"{"cliente_id":"m""#,  // cut short
    ])
    func stepsAsideForEverythingElse(line: String) {
        #expect(fast(line) == nil)
    }

    /// Both paths agree on generated lines with awkward characters.
    @Test func agreesOnGeneratedLines() {
        let pieces = ["a", "é", "中", "😀", "\\\"", "\\\\", "\\n", "\\u0041", "\\ud83d\\ude00", " ", ",", ":", "{", "}"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            let line = #"{"cliente_id":"m","telefone":"5521999990001","conteudo":"\#(text)","tipo":"resposta","prioridade":\#(Int.random(in: -100...100, using: &generator))}"#
            #expect(fast(line) == full(line), "\(line)")
        }
    }
}

/// What `fila enqueue` shows on a terminal while a large file goes in.
@Suite("fila enqueue progress")
struct EnqueueProgressTests {
    @Test func theBarSaysHowFarHowFastAndWhatBecameOfTheRows() {
        #expect(ProgressBar.line(done: 4500, total: 10000, inserted: 4400, duplicates: 90, rejected: 10, elapsed: .milliseconds(500))
            == "[=============>                ] 45% 4500/10000  9000 rows/s  inserted 4400  duplicates 90  rejected 10")
        #expect(ProgressBar.line(done: 10000, total: 10000, inserted: 10000, duplicates: 0, rejected: 0, elapsed: .seconds(2))
            == "[==============================] 100% 10000/10000  5000 rows/s  inserted 10000  duplicates 0  rejected 0")
        #expect(ProgressBar.line(done: 0, total: 3000, inserted: 0, duplicates: 0, rejected: 0, elapsed: .zero).contains(" 0 rows/s"))
    }
}
