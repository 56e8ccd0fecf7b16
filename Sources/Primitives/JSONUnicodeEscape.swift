/// The four hexadecimal digits of a JSON `\uXXXX` escape, for the byte-level JSON readers
/// (the `jsonb` validity check, the fast JSON-lines reader) that cannot afford Foundation.
public enum JSONUnicodeEscape {
    /// The UTF-16 code unit spelled by the four hex digits starting at `index` (just after
    /// the `\u`), or nil when fewer than four bytes remain or one is not a hex digit.
    @inlinable
    public static func codeUnit<Bytes: RandomAccessCollection<UInt8>>(in bytes: Bytes, at index: Int) -> UInt32?
    where Bytes.Index == Int {
        guard index >= bytes.startIndex, index + 4 <= bytes.endIndex else { return nil }
        var value: UInt32 = 0
        for position in index..<(index + 4) {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
            default: return nil
            }
            value = value << 4 | digit
        }
        return value
    }
}
