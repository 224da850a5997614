/// The Unicode facts the pre-tokenizers test, with llama.cpp's definitions
/// (src/unicode.cpp, tables generated from UnicodeData.txt):
///
/// - `letter` is \p{L} (Lu Ll Lt Lm Lo), `number` is \p{N} (Nd Nl No),
///   `punctuation` is \p{P} (Pc Pd Ps Pe Pi Pf Po).
/// - `whitespace` is the White_Space property (25 scalars), which is what llama.cpp's
///   `\s` means; note U+001C...U+001F are *not* whitespace here, unlike Python's isspace.
/// - `present` is set for every real scalar, unassigned ones included; a pre-tokenizer
///   reads "no class at all" only past the end of the chunk it is splitting, which is
///   how llama.cpp's hand-written splitters see a chunk boundary.
///
/// General categories come from Swift's own Unicode tables (Unicode 17 in Swift 6.3).
/// llama.cpp's tables are from Unicode 15.1, so scalars assigned since then are
/// unassigned to it; `newerThanLlamaCpp` lists them so both agree on every scalar
/// (checked against llama.cpp's unicode-data.cpp over all 1,114,112 code points).
struct CodepointClass: OptionSet, Sendable {
    let rawValue: UInt8

    static let letter = CodepointClass(rawValue: 1 << 0)
    static let number = CodepointClass(rawValue: 1 << 1)
    static let whitespace = CodepointClass(rawValue: 1 << 2)
    static let punctuation = CodepointClass(rawValue: 1 << 3)
    static let present = CodepointClass(rawValue: 1 << 7)

    /// The class of a scalar value (anything that came out of a valid String).
    @inline(__always)
    static func of(_ value: UInt32) -> CodepointClass {
        if value < 0x10000 { return basicPlane[Int(value)] }
        return compute(value)
    }

    // MARK: - Tables

    /// Classes of U+0000...U+FFFF, computed once: most text never leaves this plane,
    /// and a table read is much cheaper than a Unicode property lookup.  (65536)
    private static let basicPlane: [CodepointClass] = (0..<0x10000).map { compute(UInt32($0)) }

    private static func compute(_ value: UInt32) -> CodepointClass {
        var c: CodepointClass = .present
        if isWhiteSpace(value) { c.insert(.whitespace) }
        guard let scalar = Unicode.Scalar(value), !isNewerThanLlamaCpp(value) else { return c }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            c.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            c.insert(.punctuation)
        default:
            break
        }
        return c
    }

    /// Scalars assigned in Unicode 16 and 17, unknown to llama.cpp's Unicode 15.1 tables.
    private static let newerThanLlamaCpp: [ClosedRange<UInt32>] = [
        0x88F...0x88F, 0xC5C...0xC5C, 0xCDC...0xCDC, 0x1B4E...0x1B4F, 0x1B7F...0x1B7F, 0x1C89...0x1C8A,
        0xA7CB...0xA7CF, 0xA7D2...0xA7D2, 0xA7D4...0xA7D4, 0xA7DA...0xA7DC, 0xA7F1...0xA7F1,
        0x105C0...0x105F3, 0x10940...0x10959, 0x10D40...0x10D65, 0x10D6E...0x10D85, 0x10EC2...0x10EC7,
        0x10ED0...0x10ED0, 0x11380...0x11389, 0x1138B...0x1138B, 0x1138E...0x1138E, 0x11390...0x113B5,
        0x113B7...0x113B7, 0x113D1...0x113D1, 0x113D3...0x113D5, 0x113D7...0x113D8, 0x116D0...0x116E3,
        0x11BC0...0x11BE1, 0x11BF0...0x11BF9, 0x11DB0...0x11DDB, 0x11DE0...0x11DE9, 0x13460...0x143FA,
        0x16100...0x1611D, 0x16130...0x16139, 0x16D40...0x16D79, 0x16EA0...0x16EB8, 0x16EBB...0x16ED3,
        0x16FF2...0x16FF6, 0x187F8...0x187FF, 0x18CFF...0x18CFF, 0x18D09...0x18D1E, 0x18D80...0x18DF2,
        0x1CCF0...0x1CCF9, 0x1E5D0...0x1E5ED, 0x1E5F0...0x1E5FA, 0x1E5FF...0x1E5FF, 0x1E6C0...0x1E6DE,
        0x1E6E0...0x1E6E2, 0x1E6E4...0x1E6E5, 0x1E6E7...0x1E6ED, 0x1E6F0...0x1E6F4, 0x1E6FE...0x1E6FF,
        0x2B73A...0x2B73F, 0x2CEA2...0x2CEAD, 0x323B0...0x33479,
    ]

    /// Binary search in `newerThanLlamaCpp` (sorted, disjoint).
    private static func isNewerThanLlamaCpp(_ v: UInt32) -> Bool {
        var lo = 0, hi = newerThanLlamaCpp.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let r = newerThanLlamaCpp[mid]
            if v < r.lowerBound { hi = mid } else if v > r.upperBound { lo = mid + 1 } else { return true }
        }
        return false
    }

    /// The Unicode White_Space property, spelled out so it cannot drift.
    @inline(__always)
    private static func isWhiteSpace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }
}
