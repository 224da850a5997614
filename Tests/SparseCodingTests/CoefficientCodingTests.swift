import Foundation
import Testing
@testable import SparseCoding

/// ``HuffmanCode`` and the coefficient blocks built on it (``CoefficientCoding``).
@Suite struct CoefficientCodingTests {
    /// Decodes `count` symbols written with `code`.
    static func decodeAll(_ bytes: [UInt8], count: Int, code: HuffmanCode) throws -> [Int] {
        let decoder = code.decoder()
        return try bytes.withUnsafeBytes { b in
            var bit = 0
            return try (0..<count).map { _ in try decoder.decode(b, bit: &bit) }
        }
    }

    static func encodeAll(_ symbols: [Int], code: HuffmanCode) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: (code.bitCount(counts(symbols, alphabet: code.lengths.count)) + 7) / 8 + 1)
        out.withUnsafeMutableBufferPointer { o in
            var w = BitWriter(o.baseAddress!)
            for s in symbols { code.put(s, into: &w) }
            w.finish()
        }
        return out
    }

    static func counts(_ symbols: [Int], alphabet: Int) -> [Int] {
        var c = [Int](repeating: 0, count: alphabet)
        for s in symbols { c[s] += 1 }
        return c
    }

    /// Lengths worked by hand: counts 1, 1, 2, 4 make a tree of depths 3, 3, 2, 1; an
    /// unused symbol gets no code; a lone symbol gets one bit; equal counts a flat code.
    @Test func lengthsAreHuffmans() {
        #expect(HuffmanCode(counts: [1, 1, 2, 4]).lengths == [3, 3, 2, 1])
        #expect(HuffmanCode(counts: [4, 0, 2, 1, 1]).lengths == [1, 0, 2, 3, 3])
        #expect(HuffmanCode(counts: [0, 7, 0]).lengths == [0, 1, 0])
        #expect(HuffmanCode(counts: [0, 0]).lengths == [0, 0])
        #expect(HuffmanCode(counts: [Int](repeating: 5, count: 16)).lengths == [UInt8](repeating: 4, count: 16))
        // Canonical: the codes of a length are consecutive in symbol order, shorter first.
        let code = HuffmanCode(counts: [1, 1, 2, 4])
        // Symbol 3 is 0, 2 is 10, 0 and 1 are 110 and 111, first bit first in the stream.
        #expect(Self.encodeAll([3, 2, 0, 1], code: code) == [0b1101_1010, 0b0000_0001, 0])
    }

    /// Fibonacci counts make Huffman's tree as deep as the alphabet; the limit holds the
    /// codes to 15 bits, the code stays a prefix code (Kraft sum at most 1) and costs
    /// within 0.15 bits per symbol of the entropy.
    @Test func longCodesAreLimited() throws {
        var fib = [1, 1]
        while fib.count < 30 { fib.append(fib[fib.count - 1] + fib[fib.count - 2]) }
        let code = HuffmanCode(counts: fib)
        #expect(code.lengths.max()! <= UInt8(HuffmanCode.maxLength))
        let kraft = code.lengths.reduce(0.0) { $0 + pow(2, -Double($1)) }
        #expect(kraft <= 1 && kraft > 0.99)
        let total = Double(fib.reduce(0, +))
        let entropy = fib.reduce(0.0) { $0 - Double($1) / total * log2(Double($1) / total) }
        #expect(Double(code.bitCount(fib)) / total < entropy + 0.15)
        var g = Xoshiro256StarStar(seed: 3)
        let symbols = (0..<30).flatMap { s in Array(repeating: s, count: min(fib[s], 50)) }.shuffled(using: &g)
        #expect(try Self.decodeAll(Self.encodeAll(symbols, code: code), count: symbols.count, code: code) == symbols)
    }

    /// Random symbols from skewed distributions round-trip through the code and its table,
    /// and cost within a bit of their entropy.
    @Test func roundTripsSymbolsAndTables() throws {
        var rng = Xoshiro256StarStar(seed: 11)
        for alphabet in [1, 2, 63, 255, 256] {
            let symbols = (0..<5_000).map { _ -> Int in
                // Geometric-ish around the middle of the alphabet.
                let u = Double(rng.next() % 1_000_000) / 1_000_000
                return min(alphabet - 1, Int(-log(1 - u) * Double(alphabet) / 8))
            }
            let c = Self.counts(symbols, alphabet: alphabet)
            let code = HuffmanCode(counts: c)
            let bytes = Self.encodeAll(symbols, code: code)
            #expect(try Self.decodeAll(bytes, count: symbols.count, code: code) == symbols)
            let entropy = c.reduce(0.0) { $1 == 0 ? $0 : $0 - Double($1) * log2(Double($1) / Double(symbols.count)) }
            #expect(Double(code.bitCount(c)) <= entropy + Double(symbols.count), "alphabet \(alphabet)")
            var table: [UInt8] = []
            code.writeTable(to: &table)
            #expect(table.count == code.tableByteCount)
            var at = 0
            let back = try table.withUnsafeBytes { try HuffmanCode.readTable($0, at: &at, symbols: alphabet) }
            #expect(back == code && at == table.count)
        }
    }

    /// Tables that are no prefix code, or name symbols outside the alphabet, are refused.
    @Test func badTablesAreRefused() {
        #expect(throws: EntropyCodingError.self) { try HuffmanCode(lengths: [1, 1, 1]) }
        #expect(throws: EntropyCodingError.self) { try HuffmanCode(lengths: [16, 1]) }
        #expect(throws: EntropyCodingError.self) { try HuffmanCode(lengths: [UInt8](repeating: 1, count: 257)) }
        for (bytes, alphabet) in [([0, 2, 0x11, 0x01], 8), ([5, 3, 0x22, 0x22], 8), ([0, 0, 0x21], 4), ([0, 1], 4)] as [([UInt8], Int)] {
            #expect(throws: EntropyCodingError.self, "\(bytes)") {
                var at = 0
                _ = try bytes.withUnsafeBytes { try HuffmanCode.readTable($0, at: &at, symbols: alphabet) }
            }
        }
        // A bit pattern an incomplete code leaves unused is no symbol.
        let lone = HuffmanCode(counts: [0, 3])
        #expect(throws: EntropyCodingError.self) { try Self.decodeAll([0b1], count: 1, code: lone) }
    }

    /// Coefficients of `rows` rows of `pairs` pairs as a pursuit leaves them: each row's
    /// peak at ±levels, the rest mostly small; scales over a few binades.
    static func sample(rows: Int, pairs: Int, levels: Int, seed: UInt64) -> (q: [Int8], scales: [UInt16]) {
        var rng = Xoshiro256StarStar(seed: seed)
        var q: [Int8] = [], scales: [UInt16] = []
        for _ in 0..<rows {
            for k in 0..<pairs {
                let small = Int(rng.next() % UInt64(levels / 4 + 1)) * (rng.next() % 2 == 0 ? 1 : -1)
                q.append(Int8(k == 0 ? levels : small))
            }
            scales.append(HalfPrecision.bits(Float(1 + rng.next() % 1000) / 256))
        }
        return (q, scales)
    }

    @Test func blocksRoundTripAtTheirPredictedSize() throws {
        for (rows, pairs, levels) in [(300, 9, 31), (40, 5, 127), (1, 1, 7), (0, 4, 31), (2_000, 16, 15)] {
            let (q, scales) = Self.sample(rows: rows, pairs: pairs, levels: levels, seed: UInt64(rows + levels))
            let block = CoefficientCoding.encode(q, levels: levels, scales: scales)
            var counts = CoefficientCoding.Counts(levels: levels)
            counts.add(coefficients: q)
            for s in scales { counts.add(scale: s) }
            #expect(block.count == CoefficientCoding.byteCount(counts))
            let back = try block.withUnsafeBytes { try CoefficientCoding.decode($0, count: q.count, scaleCount: scales.count, levels: levels) }
            #expect(back.coefficients == q && back.scales == scales)
            if rows >= 300 {
                let fixed = BitPacking.byteCount(count: q.count, width: BitPacking.width(atomCount: 2 * levels + 1)) + 2 * scales.count
                #expect(Double(block.count) < 0.8 * Double(fixed), "\(block.count) bytes against \(fixed) fixed-width")
            }
        }
    }

    /// Any flipped bit, a truncation or an extra byte is refused, never decoded to other
    /// coefficients; so is a block read with another coefficient or scale count.
    @Test func damagedBlocksAreRefused() throws {
        let (q, scales) = Self.sample(rows: 30, pairs: 6, levels: 31, seed: 7)
        let block = CoefficientCoding.encode(q, levels: 31, scales: scales)
        func decode(_ b: [UInt8], count: Int = q.count) throws {
            _ = try b.withUnsafeBytes { try CoefficientCoding.decode($0, count: count, scaleCount: scales.count, levels: 31) }
        }
        for i in block.indices {
            for bit in [0, 3, 7] {
                var bad = block
                bad[i] ^= 1 << UInt8(bit)
                #expect(throws: EntropyCodingError.self, "byte \(i) bit \(bit)") { try decode(bad) }
            }
        }
        #expect(throws: EntropyCodingError.self) { try decode(Array(block.dropLast())) }
        #expect(throws: EntropyCodingError.self) { try decode(block + [0]) }
        #expect(throws: EntropyCodingError.self) { try decode(block, count: q.count + 1) }
        #expect(throws: EntropyCodingError.self) { try decode(block, count: q.count - 6) }
        #expect(throws: EntropyCodingError.self) {
            _ = try block.withUnsafeBytes { try CoefficientCoding.decode($0, count: q.count, scaleCount: scales.count - 1, levels: 31) }
        }
    }
}
