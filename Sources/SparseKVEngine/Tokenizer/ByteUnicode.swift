/// GPT-2's reversible byte <-> Unicode-scalar mapping.
///
/// Byte-level BPE vocabularies do not store raw bytes: every byte is replaced by a
/// printable scalar so that token texts are valid, whitespace-free strings. Printable
/// Latin-1 bytes map to themselves; the 68 others (controls, space, 0x7F-0xA0, 0xAD)
/// map, in byte order, to U+0100, U+0101, ... So the space byte 0x20 is "Ġ" (U+0120)
/// and the newline byte 0x0A is "Ċ" (U+010A).
public enum ByteUnicode {
    /// `scalarForByte[b]` is the scalar value that stands for byte `b`.  (256)
    public static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if isPrintable(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// The byte a scalar stands for, or nil when the scalar is not in the mapping.
    @inline(__always)
    public static func byte(forScalar value: UInt32) -> UInt8? {
        if value < 256 {
            return isPrintable(Int(value)) ? UInt8(value) : nil
        }
        guard value < 256 + 68 else { return nil }
        return byteForShiftedScalar[Int(value - 256)]
    }

    /// The vocabulary spelling of raw bytes: one mapped scalar per byte.
    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes {
            // Every table entry is below U+0144, a valid scalar.
            if let u = Unicode.Scalar(scalarForByte[Int(b)]) { s.append(u) }
        }
        return String(s)
    }

    /// The raw bytes a vocabulary spelling stands for; nil if any scalar is unmapped.
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for u in text.unicodeScalars {
            guard let b = byte(forScalar: u.value) else { return nil }
            out.append(b)
        }
        return out
    }

    // MARK: - Private

    /// Bytes GPT-2 keeps as themselves: '!'...'~', '¡'...'¬', '®'...'ÿ'.
    @inline(__always)
    private static func isPrintable(_ b: Int) -> Bool {
        (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
    }

    /// Inverse of the shifted part of `scalarForByte`: index = scalar - 256.  (68)
    private static let byteForShiftedScalar: [UInt8] = {
        var inverse = [UInt8](repeating: 0, count: 68)
        for b in 0..<256 where !isPrintable(b) {
            inverse[Int(scalarForByte[b]) - 256] = UInt8(b)
        }
        return inverse
    }()
}
