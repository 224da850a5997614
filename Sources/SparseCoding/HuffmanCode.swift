/// A canonical, length-limited Huffman code over an alphabet of at most 256 symbols, for
/// streams that carry their own table (as DEFLATE's dynamic blocks do).
///
/// A code is fixed by its code lengths alone (0 for an unused symbol, at most
/// ``maxLength``): codes are handed out in order of (length, symbol), each the previous
/// plus one, shifted left when the length grows. Codes go into a ``BitPacking``-order
/// stream most significant bit first; a ``Decoder`` looks the next window of bits up in
/// a table.
///
/// The table travels as the first used symbol (u8), the span of symbols after it up to
/// the last used one (u8, span - 1), then the span's lengths, 4 bits each, low nibble
/// first (``tableByteCount``).
///
/// The size of a coded stream follows from the symbol counts alone (``bitCount(_:)``), so
/// a stream that grows by appends can report its coded size without coding anything.
public struct HuffmanCode: Sendable, Equatable {
    /// Longest code: lengths fit a nibble.
    public static let maxLength = 15
    /// Symbols an alphabet may have.
    public static let maxSymbols = 256

    /// (symbols) bits of each symbol's code, 0 for an unused symbol.
    public let lengths: [UInt8]
    /// (symbols) each code with its bits reversed, as ``BitWriter`` puts them.
    private let reversedCodes: [UInt16]

    /// The optimal code for symbol counts `counts` (one per symbol, at most
    /// ``maxSymbols``) whose longest code is at most ``maxLength``: Huffman's, with the
    /// counts halved (none below 1) until it fits. A lone used symbol gets a 1-bit code;
    /// no used symbol, an empty code.
    public init(counts: [Int]) {
        self.init(checked: Self.lengths(counts: counts))
    }

    /// The code lengths ``init(counts:)`` gives, without making the codes: enough to know
    /// a coded stream's size (``bitCount(_:lengths:)``, ``tableByteCount(lengths:)``).
    public static func lengths(counts: [Int]) -> [UInt8] {
        precondition(counts.count <= Self.maxSymbols, "\(counts.count) symbols, at most \(Self.maxSymbols)")
        var weights = counts.map { max(0, $0) }
        while true {
            let depth = Self.huffmanLengths(weights)
            if depth.allSatisfy({ $0 <= Self.maxLength }) { return depth.map { UInt8($0) } }
            weights = weights.map { $0 == 0 ? 0 : max(1, $0 >> 1) }
        }
    }

    /// The code with these lengths.
    ///
    /// - Throws: `EntropyCodingError.badTable` for more than ``maxSymbols`` symbols, a
    ///   length above ``maxLength``, or lengths no prefix code has (Kraft sum above 1). An
    ///   incomplete code is accepted (a lone symbol's); bit patterns it leaves unused are
    ///   refused when decoding.
    public init(lengths: [UInt8]) throws {
        guard lengths.count <= Self.maxSymbols else { throw EntropyCodingError.badTable("\(lengths.count) symbols, at most \(Self.maxSymbols)") }
        guard lengths.allSatisfy({ Int($0) <= Self.maxLength }) else { throw EntropyCodingError.badTable("a code longer than \(Self.maxLength) bits") }
        // Kraft: sum of 2^-l at most 1, in units of 2^-maxLength.
        let kraft = lengths.reduce(0) { $0 + ($1 > 0 ? 1 << (Self.maxLength - Int($1)) : 0) }
        guard kraft <= 1 << Self.maxLength else { throw EntropyCodingError.badTable("code lengths no prefix code has") }
        self.init(checked: lengths)
    }

    /// The code with `lengths`, which have passed ``init(lengths:)``'s checks (or come
    /// from Huffman's construction).
    private init(checked lengths: [UInt8]) {
        var counts = [Int](repeating: 0, count: Self.maxLength + 1)
        for l in lengths where l > 0 { counts[Int(l)] += 1 }
        var next = [Int](repeating: 0, count: Self.maxLength + 2)
        for l in 1...Self.maxLength { next[l + 1] = (next[l] + counts[l]) << 1 }
        var reversed = [UInt16](repeating: 0, count: lengths.count)
        for (s, l) in lengths.enumerated() where l > 0 {
            let code = next[Int(l)]
            next[Int(l)] += 1
            var r = 0
            for b in 0..<Int(l) where code >> b & 1 != 0 { r |= 1 << (Int(l) - 1 - b) }
            reversed[s] = UInt16(r)
        }
        self.lengths = lengths
        reversedCodes = reversed
    }

    /// Huffman code lengths for `weights` (0: unused), without a length limit.
    private static func huffmanLengths(_ weights: [Int]) -> [Int] {
        let leaves = weights.indices.filter { weights[$0] > 0 }.sorted { (weights[$0], $0) < (weights[$1], $1) }
        var depth = [Int](repeating: 0, count: weights.count)
        guard leaves.count > 1 else {
            if let only = leaves.first { depth[only] = 1 }
            return depth
        }
        // Two queues: the sorted leaves, and internal nodes, made in ascending weight.
        // Nodes 0 ..< n are leaves (in `leaves` order), n ... internal.
        let n = leaves.count
        var weight = leaves.map { weights[$0] }, parent = [Int](repeating: -1, count: 2 * n - 1)
        weight.reserveCapacity(2 * n - 1)
        var nextLeaf = 0, nextInternal = n
        func takeSmallest() -> Int {
            if nextLeaf < n && (nextInternal >= weight.count || weight[nextLeaf] <= weight[nextInternal]) {
                nextLeaf += 1
                return nextLeaf - 1
            }
            nextInternal += 1
            return nextInternal - 1
        }
        while weight.count < 2 * n - 1 {
            let a = takeSmallest(), b = takeSmallest()
            parent[a] = weight.count
            parent[b] = weight.count
            weight.append(weight[a] + weight[b])
        }
        var nodeDepth = [Int](repeating: 0, count: 2 * n - 1)
        for node in stride(from: 2 * n - 3, through: 0, by: -1) { nodeDepth[node] = nodeDepth[parent[node]] + 1 }
        for (i, s) in leaves.enumerated() { depth[s] = nodeDepth[i] }
        return depth
    }

    /// Bits of the codes of symbols counted by `counts` (one per symbol of this alphabet).
    public func bitCount(_ counts: [Int]) -> Int { Self.bitCount(counts, lengths: lengths) }

    /// Bits of the codes of symbols counted by `counts` under code lengths `lengths`.
    public static func bitCount(_ counts: [Int], lengths: [UInt8]) -> Int {
        zip(counts, lengths).reduce(0) { $0 + $1.0 * Int($1.1) }
    }

    /// The used symbols' span: first and last symbol with a code (0, 0 for an empty code).
    private static func span(_ lengths: [UInt8]) -> (first: Int, last: Int) {
        guard let first = lengths.firstIndex(where: { $0 > 0 }), let last = lengths.lastIndex(where: { $0 > 0 }) else { return (0, 0) }
        return (first, last)
    }

    /// Bytes of the table as stored: 2, and half a byte per symbol of the span.
    public var tableByteCount: Int { Self.tableByteCount(lengths: lengths) }

    /// Bytes of the stored table of a code with `lengths`.
    public static func tableByteCount(lengths: [UInt8]) -> Int {
        let (first, last) = span(lengths)
        return 2 + (last - first + 2) / 2
    }

    /// Appends the table (see the type's documentation).
    public func writeTable(to out: inout [UInt8]) {
        let (first, last) = Self.span(lengths)
        out.append(UInt8(first))
        out.append(UInt8(last - first))
        for i in stride(from: first, through: last, by: 2) {
            let high = i + 1 <= last ? lengths[i + 1] : 0
            out.append(lengths[i] | high << 4)
        }
    }

    /// Reads a table written by ``writeTable(to:)`` from `bytes` at `at`, moving `at` past
    /// it, for an alphabet of `symbols` symbols.
    ///
    /// - Throws: `EntropyCodingError.corruptStream` when the table runs past the bytes,
    ///   names a symbol outside the alphabet, sets the unused nibble, or is no prefix code.
    public static func readTable(_ bytes: UnsafeRawBufferPointer, at: inout Int, symbols: Int) throws -> HuffmanCode {
        guard at + 2 <= bytes.count else { throw EntropyCodingError.corruptStream("a code table past the end") }
        let first = Int(bytes[at]), last = first + Int(bytes[at + 1])
        guard last < symbols else { throw EntropyCodingError.corruptStream("a code table for symbol \(last) of \(symbols)") }
        let size = 2 + (last - first + 2) / 2
        guard at + size <= bytes.count else { throw EntropyCodingError.corruptStream("a code table past the end") }
        var lengths = [UInt8](repeating: 0, count: symbols)
        for (k, i) in stride(from: first, through: last, by: 2).enumerated() {
            let b = bytes[at + 2 + k]
            lengths[i] = b & 0x0F
            if i + 1 <= last { lengths[i + 1] = b >> 4 } else if b >> 4 != 0 {
                throw EntropyCodingError.corruptStream("stray bits in a code table")
            }
        }
        at += size
        do { return try HuffmanCode(lengths: lengths) } catch {
            throw EntropyCodingError.corruptStream("a code table that is no prefix code")
        }
    }

    /// Puts the code of `symbol`, which must have one.
    @inline(__always)
    public func put(_ symbol: Int, into w: inout BitWriter) {
        precondition(lengths[symbol] > 0, "symbol \(symbol) has no code")
        w.put(UInt64(reversedCodes[symbol]), bits: Int(lengths[symbol]))
    }

    /// The table that decodes this code (``Decoder``).
    public func decoder() -> Decoder { Decoder(self) }

    /// Decodes a stream a window of bits at a time: for every pattern of the longest
    /// code's length (first stream bit in bit 0), the symbol whose code starts it and that
    /// code's length (0: no code does, a pattern an incomplete code leaves unused).
    /// At most 2^15 entries of 2 bytes.
    public struct Decoder: Sendable {
        let bits: Int
        let entries: [UInt16]

        init(_ code: HuffmanCode) {
            bits = max(1, Int(code.lengths.max() ?? 0))
            var entries = [UInt16](repeating: 0, count: 1 << bits)
            for (s, l) in code.lengths.enumerated() where l > 0 {
                var i = Int(code.reversedCodes[s])
                while i < entries.count {
                    entries[i] = UInt16(s) << 4 | UInt16(l)
                    i += 1 << Int(l)
                }
            }
            self.entries = entries
        }

        /// Decodes one symbol from `bytes`, stream bit `bit` on (moved past its code).
        ///
        /// - Throws: `EntropyCodingError.corruptStream` when the code runs past the bytes
        ///   or the bits there start no code.
        @inline(__always)
        public func decode(_ bytes: UnsafeRawBufferPointer, bit: inout Int) throws -> Int {
            let byte = bit >> 3, n = bytes.count
            var w: UInt64 = 0
            if byte + 8 <= n {
                w = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: byte, as: UInt64.self))
            } else if byte < n {
                for i in 0..<(n - byte) { w |= UInt64(bytes[byte + i]) << UInt64(8 * i) }
            }
            let entry = entries[Int(truncatingIfNeeded: (w >> UInt64(bit & 7)) & ((1 << UInt64(bits)) - 1))]
            let length = Int(entry & 0x0F)
            guard length > 0 else { throw EntropyCodingError.corruptStream("a bit pattern that is no code") }
            guard bit + length <= n * 8 else { throw EntropyCodingError.corruptStream("codes end early") }
            bit += length
            return Int(entry >> 4)
        }
    }
}
