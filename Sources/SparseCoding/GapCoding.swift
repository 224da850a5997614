/// Rows of atom indices held in ascending order, stored as Rice-coded gaps.
///
/// The pairs of a sparse code can be summed in any order, so a row of s indices need only
/// say which atoms it uses, not in which order the pursuit found them: sorted, it carries
/// log2(s!) bits less (44 bits for s = 16). Each row's indices are coded as their gaps,
/// the first from 0, each later one from the previous index (0 for an atom taken twice,
/// as Matching Pursuit may). A gap g is a Rice code with parameter k: g >> k one-bits, a
/// zero bit, then the k low bits of g. One k serves a whole stream, the one that makes it
/// shortest (``bestParameter(_:)``). Bits go least significant first into a little-endian
/// bit stream, as ``BitPacking`` writes them; the last byte's unused high bits are zero.
/// The CRC-32 of those bytes follows (4 bytes, little-endian), as in ``RANSCoder``: a
/// damaged stream can otherwise still parse.
///
/// For s indices spread over N atoms the gaps average about N / s, and the code costs
/// about log2(N / s) + 1.5 bits per index instead of log2 N (7.6 against 10 for N = 1,024,
/// s = 16), close to the log2(C(N, s)) / s bound for an unordered set.
public enum GapCoding {
    /// Largest Rice parameter tried and accepted (indices are below 2^16).
    public static let maxParameter = 15

    /// The gaps of rows of ascending indices: `rows[r]` indices per row, in order.
    /// - Precondition: each row's indices are non-decreasing.
    public static func gaps(_ values: [UInt16], rowCounts: [Int]) -> [UInt32] {
        var out = [UInt32](), at = 0
        out.reserveCapacity(values.count)
        for count in rowCounts {
            var previous: UInt16 = 0
            for v in values[at..<at + count] {
                precondition(v >= previous, "indices of a row must ascend for gap coding")
                out.append(UInt32(v - previous))
                previous = v
            }
            at += count
        }
        return out
    }

    /// Bits of `gaps` Rice-coded with parameter k.
    public static func bitCount(_ gaps: [UInt32], parameter k: Int) -> Int {
        gaps.reduce(0) { $0 + Int($1 >> UInt32(k)) + 1 + k }
    }

    /// The parameter (0 ... ``maxParameter``) that codes `gaps` in the fewest bits, and
    /// those bits.
    public static func bestParameter(_ gaps: [UInt32]) -> (parameter: Int, bits: Int) {
        var best = (parameter: 0, bits: Int.max)
        for k in 0...maxParameter {
            let bits = bitCount(gaps, parameter: k)
            if bits < best.bits { best = (k, bits) }
        }
        return best
    }

    /// Bytes of the coded stream: the codes and the checksum.
    public static func byteCount(bits: Int) -> Int { (bits + 7) / 8 + 4 }

    /// `gaps` Rice-coded with parameter k, then the checksum: ``byteCount(bits:)`` bytes.
    public static func encode(_ gaps: [UInt32], parameter k: Int) -> [UInt8] {
        precondition((0...maxParameter).contains(k), "Rice parameter \(k) outside 0...\(maxParameter)")
        var out = [UInt8](repeating: 0, count: (bitCount(gaps, parameter: k) + 7) / 8)
        out.withUnsafeMutableBufferPointer { o in
            guard let base = o.baseAddress else { return }
            var w = BitWriter(base)
            for g in gaps {
                var q = Int(g >> UInt32(k))
                while q > 0 {
                    let run = min(q, 32)
                    w.put(UInt64.max, bits: run)
                    q -= run
                }
                w.put(0, bits: 1)
                w.put(UInt64(g), bits: k)
            }
            w.finish()
        }
        let crc = out.withUnsafeBytes { CRC32.update(0, $0) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: crc >> (8 * i))) }
        return out
    }

    /// Decodes rows of `rowCounts[r]` indices from `stream`, which must be exactly the coded
    /// stream and its checksum: every index below `limit`, no bit left over but the last
    /// byte's zero padding.
    ///
    /// - Throws: `EntropyCodingError.corruptStream` for a checksum mismatch, or a stream
    ///   that ends early, names an index at or above `limit`, or has bytes or set bits
    ///   after the last code.
    public static func decode(_ stream: UnsafeRawBufferPointer, rowCounts: [Int], parameter k: Int,
                              limit: Int) throws -> [UInt16] {
        guard (0...maxParameter).contains(k) else {
            throw EntropyCodingError.corruptStream("Rice parameter \(k) outside 0...\(maxParameter)")
        }
        guard stream.count >= 4 else { throw EntropyCodingError.corruptStream("\(stream.count) bytes, the checksum alone takes 4") }
        let bytes = UnsafeRawBufferPointer(rebasing: stream[..<(stream.count - 4)])
        let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(stream[stream.count - 4 + $1]) << (8 * $1) }
        guard CRC32.update(0, bytes) == stored else { throw EntropyCodingError.corruptStream("checksum mismatch") }
        let total = rowCounts.reduce(0, +), bitLength = bytes.count * 8, n = bytes.count
        var out = [UInt16](), bit = 0
        out.reserveCapacity(total)
        /// At least 57 stream bits from `bit` on, least significant first (zeros past the end).
        @inline(__always) func window(_ bit: Int) -> UInt64 {
            let byte = bit >> 3
            var w: UInt64 = 0
            if byte + 8 <= n {
                w = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: byte, as: UInt64.self))
            } else if byte < n {
                for i in 0..<(n - byte) { w |= UInt64(bytes[byte + i]) << UInt64(8 * i) }
            }
            return w &>> UInt64(bit & 7)
        }
        let quotientLimit = limit >> k, mask = (UInt64(1) << UInt64(k)) - 1
        for (r, count) in rowCounts.enumerated() {
            var previous = 0
            for _ in 0..<count {
                // The unary quotient: a run of one-bits, up to 56 of them per window.
                var q = 0
                while true {
                    let ones = (~window(bit)).trailingZeroBitCount
                    if ones < 57 {
                        q += ones
                        bit += ones + 1
                        break
                    }
                    q += 57
                    bit += 57
                    guard bit < bitLength else { throw EntropyCodingError.corruptStream("gap codes end early in row \(r)") }
                }
                // The terminating zero must lie inside the stream (past it the window reads zeros).
                guard bit <= bitLength else { throw EntropyCodingError.corruptStream("gap codes end early in row \(r)") }
                // No gap reaches the limit: a longer run is damage, not a code.
                guard q <= quotientLimit else { throw EntropyCodingError.corruptStream("a gap past \(limit) atoms in row \(r)") }
                guard bit + k <= bitLength else { throw EntropyCodingError.corruptStream("gap codes end early in row \(r)") }
                let low = k == 0 ? 0 : Int(window(bit) & mask)
                bit += k
                let value = previous + (q << k | low)
                guard value < limit else { throw EntropyCodingError.corruptStream("index \(value) in row \(r) names no atom (\(limit) atoms)") }
                out.append(UInt16(value))
                previous = value
            }
        }
        guard (bit + 7) / 8 == bytes.count else {
            throw EntropyCodingError.corruptStream("\(bytes.count - (bit + 7) / 8) bytes after the last gap code")
        }
        if bit % 8 != 0, bytes[bit >> 3] >> UInt8(bit & 7) != 0 {
            throw EntropyCodingError.corruptStream("stray bits after the last gap code")
        }
        return out
    }
}
