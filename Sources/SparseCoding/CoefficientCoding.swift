/// Quantized pair coefficients and their rows' scales as one entropy-coded block: each
/// coefficient q in -L ... L (L = 2^(bits-1) - 1) Huffman-coded with a code made for the
/// block (``HuffmanCode``), and each row's fp16 scale split in two, its high byte (sign,
/// exponent, top mantissa bits) Huffman-coded with a second code and its low byte stored
/// as it is.
///
/// Coefficients of a sparse code are far from uniform: against a scale of the row's peak
/// most pairs sit a few steps from zero (a key's first atom carries most of its energy),
/// and the scales of a layer span a few binades. On SmolLM2's keys at 9 pairs and 6-bit
/// coefficients the coefficients' entropy is about 4.2 bits and the scales' high bytes'
/// about 2.4, where fixed width spends 6 and 8.
///
/// Block layout: the coefficients' table, the high bytes' table (``HuffmanCode``'s table
/// form), the codes (all coefficients in order, then all high bytes) as a ``BitPacking``
/// order bit stream whose last byte's unused bits are zero, the low bytes, then a CRC-32
/// (4 bytes, little-endian) of everything before it and of the coefficient and scale
/// counts, which the container knows: a damaged block, or one read with other counts, is
/// refused.
///
/// The block's size follows from symbol counts (``byteCount(_:)``), so a stream that grows
/// row by row can report it from running counts.
public enum CoefficientCoding {
    /// What the block's size depends on: how often each coefficient and each scale high
    /// byte occurs, and the number of scales.
    public struct Counts: Sendable, Equatable {
        /// (2L + 1) occurrences of q = -L ... L.
        public var coefficients: [Int]
        /// (256) occurrences of each scale high byte.
        public var scaleHighBytes: [Int]
        public var scales: Int

        public init(levels: Int) {
            coefficients = [Int](repeating: 0, count: 2 * levels + 1)
            scaleHighBytes = [Int](repeating: 0, count: 256)
            scales = 0
        }

        /// The counts of coefficients `q` (each in -levels ... levels) and `scales`.
        public init(levels: Int, coefficients q: [Int8], scales: [UInt16]) {
            self.init(levels: levels)
            add(coefficients: q)
            for s in scales { add(scale: s) }
        }

        /// Counts `q` (each in -L ... L).
        public mutating func add<C: Collection<Int8>>(coefficients q: C) {
            let levels = (coefficients.count - 1) / 2
            for v in q { coefficients[Int(v) + levels] += 1 }
        }

        public mutating func add(scale: UInt16) {
            scaleHighBytes[Int(scale >> 8)] += 1
            scales += 1
        }
    }

    /// Bytes of the block that codes symbols counted by `counts`.
    public static func byteCount(_ counts: Counts) -> Int {
        let q = HuffmanCode.lengths(counts: counts.coefficients), h = HuffmanCode.lengths(counts: counts.scaleHighBytes)
        let bits = HuffmanCode.bitCount(counts.coefficients, lengths: q) + HuffmanCode.bitCount(counts.scaleHighBytes, lengths: h)
        return HuffmanCode.tableByteCount(lengths: q) + HuffmanCode.tableByteCount(lengths: h) + (bits + 7) / 8 + counts.scales + 4
    }

    /// The block for coefficients `q` (each in -levels ... levels) and `scales`.
    public static func encode(_ q: [Int8], levels: Int, scales: [UInt16]) -> [UInt8] {
        let counts = Counts(levels: levels, coefficients: q, scales: scales)
        let qc = HuffmanCode(counts: counts.coefficients), hc = HuffmanCode(counts: counts.scaleHighBytes)
        var out: [UInt8] = []
        qc.writeTable(to: &out)
        hc.writeTable(to: &out)
        let bits = qc.bitCount(counts.coefficients) + hc.bitCount(counts.scaleHighBytes)
        var codes = [UInt8](repeating: 0, count: (bits + 7) / 8)
        codes.withUnsafeMutableBufferPointer { c in
            guard let base = c.baseAddress else { return }
            var w = BitWriter(base)
            for v in q { qc.put(Int(v) + levels, into: &w) }
            for s in scales { hc.put(Int(s >> 8), into: &w) }
            w.finish()
        }
        out += codes
        out += scales.map { UInt8(truncatingIfNeeded: $0) }
        let crc = out.withUnsafeBytes { checksum($0, count: q.count, scaleCount: scales.count) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: crc >> (8 * i))) }
        return out
    }

    /// The CRC-32 of `body`, then of the counts as two u64 little-endian: the counts come
    /// from the container, and a block read with other counts is refused.
    private static func checksum(_ body: UnsafeRawBufferPointer, count: Int, scaleCount: Int) -> UInt32 {
        let counts = (0..<16).map { UInt8(truncatingIfNeeded: ($0 < 8 ? UInt64(count) : UInt64(scaleCount)) >> (8 * UInt64($0 % 8))) }
        return counts.withUnsafeBytes { CRC32.update(CRC32.update(0, body), $0) }
    }

    /// Decodes `count` coefficients and `scaleCount` scales from `block`, which must be
    /// exactly one block.
    ///
    /// - Throws: `EntropyCodingError.corruptStream` for a checksum mismatch, a bad table,
    ///   a coefficient outside -levels ... levels, codes that end early, or bytes or set
    ///   bits left over.
    public static func decode(_ block: UnsafeRawBufferPointer, count: Int, scaleCount: Int,
                              levels: Int) throws -> (coefficients: [Int8], scales: [UInt16]) {
        guard block.count >= 4 else { throw EntropyCodingError.corruptStream("\(block.count) bytes, the checksum alone takes 4") }
        let body = UnsafeRawBufferPointer(rebasing: block[..<(block.count - 4)])
        let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(block[block.count - 4 + $1]) << (8 * $1) }
        guard checksum(body, count: count, scaleCount: scaleCount) == stored else {
            throw EntropyCodingError.corruptStream("checksum mismatch (damaged, or read with other counts)")
        }
        var at = 0
        let qc = try HuffmanCode.readTable(body, at: &at, symbols: 2 * levels + 1)
        let hc = try HuffmanCode.readTable(body, at: &at, symbols: 256)
        guard body.count - at >= scaleCount else { throw EntropyCodingError.corruptStream("\(body.count - at) bytes after the tables for \(scaleCount) scales") }
        let codes = UnsafeRawBufferPointer(rebasing: body[at..<(body.count - scaleCount)])
        var bit = 0
        var q = [Int8](repeating: 0, count: count), high = [UInt16](repeating: 0, count: scaleCount)
        let qd = qc.decoder(), hd = hc.decoder()
        for i in 0..<count { q[i] = Int8(try qd.decode(codes, bit: &bit) - levels) }
        for i in 0..<scaleCount { high[i] = UInt16(try hd.decode(codes, bit: &bit)) }
        guard (bit + 7) / 8 == codes.count else {
            throw EntropyCodingError.corruptStream("\(codes.count - (bit + 7) / 8) bytes after the last code")
        }
        if bit % 8 != 0, codes[bit >> 3] >> UInt8(bit & 7) != 0 {
            throw EntropyCodingError.corruptStream("stray bits after the last code")
        }
        let low = body.count - scaleCount
        let scales = (0..<scaleCount).map { high[$0] << 8 | UInt16(body[low + $0]) }
        return (q, scales)
    }
}
