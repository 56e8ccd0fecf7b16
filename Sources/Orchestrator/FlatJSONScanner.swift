import Primitives

/// A fast reader for the common shape of a JSON-lines message: one flat object whose values
/// are strings, whole numbers or null. It answers nil for anything else (nested values,
/// booleans, fractions, duplicate keys, malformed text), and the caller then uses the full
/// JSON decoder, which also words the errors. Campaign files are hundreds of thousands of
/// such lines, and this is where `fila enqueue` spent most of its time.
enum FlatJSONScanner {
    enum Value: Equatable {
        case string(String)
        case integer(Int)
        case null
    }

    static func scan(_ bytes: UnsafeRawBufferPointer) -> [String: Value]? {
        var index = 0
        let count = bytes.count
        func skipSpace() {
            while index < count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D { index += 1 }
        }
        func string() -> String? {
            guard index < count, bytes[index] == 0x22 else { return nil }
            index += 1
            var utf8: [UInt8] = []
            while index < count {
                let byte = bytes[index]
                switch byte {
                case 0x22:
                    index += 1
                    return String(validating: utf8, as: UTF8.self)
                case 0x5C:
                    guard index + 1 < count else { return nil }
                    let escaped = bytes[index + 1]
                    index += 2
                    switch escaped {
                    case 0x22, 0x5C, 0x2F: utf8.append(escaped)
                    case 0x62: utf8.append(0x08)
                    case 0x66: utf8.append(0x0C)
                    case 0x6E: utf8.append(0x0A)
                    case 0x72: utf8.append(0x0D)
                    case 0x74: utf8.append(0x09)
                    case 0x75:
                        guard var scalar = hex4() else { return nil }
                        if (0xD800...0xDBFF).contains(scalar) {
                            // A high surrogate must be followed by \u and a low one.
                            guard index + 1 < count, bytes[index] == 0x5C, bytes[index + 1] == 0x75 else { return nil }
                            index += 2
                            guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            return nil
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { return nil }
                        utf8.append(contentsOf: String(Character(unicode)).utf8)
                    default:
                        return nil
                    }
                default:
                    // Control characters must be escaped in JSON.
                    guard byte >= 0x20 else { return nil }
                    utf8.append(byte)
                    index += 1
                }
            }
            return nil
        }
        func hex4() -> UInt32? {
            guard let unit = JSONUnicodeEscape.codeUnit(in: bytes, at: index) else { return nil }
            index += 4
            return unit
        }
        func integer() -> Int? {
            let start = index
            if index < count, bytes[index] == 0x2D { index += 1 }
            let digitsStart = index
            while index < count, (0x30...0x39).contains(bytes[index]) { index += 1 }
            guard index > digitsStart, index - digitsStart <= 18 else { return nil }
            // A leading zero is only valid alone; fractions and exponents go to the full decoder.
            if bytes[digitsStart] == 0x30 && index - digitsStart > 1 { return nil }
            if index < count, bytes[index] == 0x2E || bytes[index] == 0x65 || bytes[index] == 0x45 { return nil }
            var value = 0
            for position in digitsStart..<index { value = value * 10 + Int(bytes[position] - 0x30) }
            return bytes[start] == 0x2D ? -value : value
        }

        skipSpace()
        guard index < count, bytes[index] == 0x7B else { return nil }
        index += 1
        var fields: [String: Value] = [:]
        skipSpace()
        if index < count, bytes[index] == 0x7D {
            index += 1
        } else {
            while true {
                skipSpace()
                guard let key = string() else { return nil }
                skipSpace()
                guard index < count, bytes[index] == 0x3A else { return nil }
                index += 1
                skipSpace()
                guard index < count else { return nil }
                let value: Value
                switch bytes[index] {
                case 0x22:
                    guard let text = string() else { return nil }
                    value = .string(text)
                case 0x6E:
                    guard index + 4 <= count, bytes[index + 1] == 0x75, bytes[index + 2] == 0x6C, bytes[index + 3] == 0x6C else { return nil }
                    index += 4
                    value = .null
                case 0x2D, 0x30...0x39:
                    guard let number = integer() else { return nil }
                    value = .integer(number)
                default:
                    return nil
                }
                guard fields.updateValue(value, forKey: key) == nil else { return nil }
                skipSpace()
                guard index < count else { return nil }
                if bytes[index] == 0x2C {
                    index += 1
                    continue
                }
                guard bytes[index] == 0x7D else { return nil }
                index += 1
                break
            }
        }
        skipSpace()
        return index == count ? fields : nil
    }
}
