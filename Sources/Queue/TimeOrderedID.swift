#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Message ids
/// are made here, not by the database, so each input knows its row; being time-ordered, a
/// batch lands at the right edge of the primary key instead of on random pages, which makes
/// bulk enqueue markedly cheaper than with random (v4) ids, and ids sort by creation.
public enum TimeOrderedID {
    public static func make(at date: Date = Date()) -> UUID {
        var generator = SystemRandomNumberGenerator()
        return make(milliseconds: UInt64(max(0, date.timeIntervalSince1970 * 1000)), using: &generator)
    }

    static func make(milliseconds: UInt64, using generator: inout some RandomNumberGenerator) -> UUID {
        let random = generator.next() as UInt64
        let more = generator.next() as UInt64
        let ms = milliseconds & 0xFFFF_FFFF_FFFF
        return UUID(
            uuid: (
                UInt8(truncatingIfNeeded: ms >> 40), UInt8(truncatingIfNeeded: ms >> 32),
                UInt8(truncatingIfNeeded: ms >> 24), UInt8(truncatingIfNeeded: ms >> 16),
                UInt8(truncatingIfNeeded: ms >> 8), UInt8(truncatingIfNeeded: ms),
                0x70 | UInt8(truncatingIfNeeded: random >> 60),  // version 7, then 12 random bits
                UInt8(truncatingIfNeeded: random >> 52),
                0x80 | (UInt8(truncatingIfNeeded: random >> 46) & 0x3F),  // variant 10, then 62 random bits
                UInt8(truncatingIfNeeded: random >> 38),
                UInt8(truncatingIfNeeded: more >> 40), UInt8(truncatingIfNeeded: more >> 32),
                UInt8(truncatingIfNeeded: more >> 24), UInt8(truncatingIfNeeded: more >> 16),
                UInt8(truncatingIfNeeded: more >> 8), UInt8(truncatingIfNeeded: more)
            )
        )
    }

    /// The creation time a v7 id carries, to the millisecond.
    public static func date(of id: UUID) -> Date {
        let bytes = id.uuid
        let ms = [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Date(timeIntervalSince1970: Double(ms) / 1000)
    }
}
