import Foundation
import Logging
import Observability
import Testing

/// The correlation id's rule, and its task-local carrier: bound for a scope, inherited by
/// child tasks, restored after, and added to log metadata only while bound.
@Suite("Correlation ids")
struct CorrelationTests {
    @Test func theRule() {
        for valid in ["a", "campanha-7", "pedido-42:tentativa/1", "user@host", "aGVsbG8=+/", String(repeating: "x", count: 128), "0af7651916cd43dd8448eb211c80319c"] {
            #expect(CorrelationID(validating: valid)?.value == valid, "\(valid)")
        }
        for invalid in ["", String(repeating: "x", count: 129), "com espaço", "pedido 42", "a\u{0}b", "a\nb", "a\"b", "a;b", "a,b", "ção"] {
            #expect(CorrelationID(validating: invalid) == nil, "\(invalid.debugDescription)")
        }
        #expect(CorrelationID.rule == "1-128 characters from A-Z a-z 0-9 and +-./:=@_")
    }

    @Test func generatedIDsAreNewLowerCaseUUIDsThatFollowTheRule() {
        let ids = (0..<100).map { _ in CorrelationID.generate().value }
        #expect(Set(ids).count == 100)
        #expect(ids.allSatisfy { UUID(uuidString: $0) != nil && $0 == $0.lowercased() && CorrelationID.isValid($0) })
        let row = UUID()
        #expect(CorrelationID(row).value == row.uuidString.lowercased())
    }

    @Test func boundForAScopeAndInheritedByChildTasks() async {
        #expect(Correlation.current == nil)
        #expect(Correlation.metadataProvider.get().isEmpty)
        let outer = CorrelationID.generate()
        let inner = CorrelationID.generate()
        await Correlation.withID(outer) {
            #expect(Correlation.current == outer)
            #expect(Correlation.metadataProvider.get()["correlation_id"] == .string(outer.value))
            await withTaskGroup(of: CorrelationID?.self) { group in
                group.addTask { Correlation.current }
                group.addTask { await Correlation.withID(inner) { Correlation.current } }
                var seen: Set<CorrelationID?> = []
                for await id in group { seen.insert(id) }
                #expect(seen == [outer, inner])
            }
            #expect(Correlation.current == outer)
        }
        #expect(Correlation.current == nil)
    }
}
