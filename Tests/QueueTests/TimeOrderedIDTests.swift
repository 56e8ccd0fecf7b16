import Foundation
import Testing

@testable import Queue

@Suite("Time-ordered message ids (UUID v7)")
struct TimeOrderedIDTests {
    @Test func versionVariantAndTimestamp() {
        let date = Date(timeIntervalSince1970: 1_769_176_800.123)  // 2026-01-23T14:00:00.123Z
        let id = TimeOrderedID.make(at: date)
        let text = id.uuidString.lowercased()
        // 019bead3-... : the first 48 bits are the milliseconds in hex.
        #expect(text.hasPrefix(String(1_769_176_800_123, radix: 16).leftPadded(to: 12).prefix(8)))
        #expect(Array(text)[14] == "7")
        #expect("89ab".contains(Array(text)[19]))
        #expect(abs(TimeOrderedID.date(of: id).timeIntervalSince(date)) < 0.001)
    }

    @Test func idsSortByTimeAndDoNotCollide() {
        let base = Date(timeIntervalSince1970: 1_769_176_800)
        var ids: [UUID] = []
        for step in 0..<2_000 {
            ids.append(TimeOrderedID.make(at: base.addingTimeInterval(Double(step / 10) / 1000)))
        }
        #expect(Set(ids).count == ids.count)
        let times = ids.map { TimeOrderedID.date(of: $0) }
        #expect(times == times.sorted())
        // Different milliseconds compare in order as strings too (what Postgres' uuid order does).
        let first = ids[0].uuidString.lowercased()
        let last = ids[ids.count - 1].uuidString.lowercased()
        #expect(first < last)
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - count)) + self
    }
}
