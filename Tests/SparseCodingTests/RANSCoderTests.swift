import Foundation
import Testing
@testable import SparseCoding

@Suite struct RANSCoderTests {
    /// Symbols drawn from a Zipf-like law over `n` symbols (skewed, as atom usage is).
    static func skewed(count: Int, symbols n: Int, seed: UInt64) -> [Int] {
        var rng = Xoshiro256StarStar(seed: seed)
        let weights = (0..<n).map { 1.0 / Double($0 + 1) }, total = weights.reduce(0, +)
        var cdf: [Double] = []
        var acc = 0.0
        for w in weights { acc += w / total; cdf.append(acc) }
        return (0..<count).map { _ in
            let u = Double(rng.next() >> 11) / Double(1 << 53)
            var lo = 0, hi = n - 1
            while lo < hi { let mid = (lo + hi) / 2; if cdf[mid] < u { lo = mid + 1 } else { hi = mid } }
            return lo
        }
    }

    static func counts(_ s: [Int], symbols n: Int) -> [Int] {
        var c = [Int](repeating: 0, count: n)
        for x in s { c[x] += 1 }
        return c
    }

    @Test func tablesAreNormalisedAndKeepEverySymbol() throws {
        let t = try FrequencyTable(counts: [1000, 0, 3, 0, 70000, 5])
        #expect(t.frequencies.reduce(0, +) == UInt32(FrequencyTable.total))
        #expect(t.frequencies.allSatisfy { $0 >= 1 })
        #expect(t.frequencies[4] > t.frequencies[0] && t.frequencies[0] > t.frequencies[5])
        for s in 0..<t.symbolCount {
            for slot in [t.starts[s], t.starts[s + 1] - 1] { #expect(t.symbol(forSlot: slot) == s) }
        }
        #expect(throws: EntropyCodingError.self) { try FrequencyTable(frequencies: [1, 2, 3]) }
        #expect(throws: EntropyCodingError.self) { try FrequencyTable(frequencies: [0, UInt32(FrequencyTable.total)]) }
        #expect(throws: EntropyCodingError.self) { try FrequencyTable(counts: []) }
    }

    @Test func roundTripsRandomStreamsNearTheirEntropy() throws {
        for (n, count, seed) in [(2, 1, 1), (1025, 0, 2), (1025, 7, 3), (1025, 100_000, 4), (513, 30_000, 5), (40, 5000, 6)] {
            let symbols = Self.skewed(count: count, symbols: n, seed: UInt64(seed))
            let table = try FrequencyTable(counts: Self.counts(Self.skewed(count: 50_000, symbols: n, seed: 99), symbols: n))
            let bytes = try RANSCoder.encode(symbols, table: table)
            #expect(try RANSCoder.decode(bytes, count: count, table: table) == symbols)
            if count >= 30_000 {
                // Within 1% (plus the 4-byte state and 4-byte checksum) of the ideal code length under the table.
                let ideal = symbols.reduce(0.0) { $0 + table.cost($1) } / 8
                #expect(Double(bytes.count) <= ideal * 1.01 + 8, "\(bytes.count) bytes, ideal \(ideal)")
                #expect(Double(bytes.count) * 8 / Double(count) < log2(Double(n)) * 0.9)
            }
        }
    }

    @Test func uniformDataUnderAUniformTableCostsLog2N() throws {
        let table = try FrequencyTable(counts: [Int](repeating: 1, count: 256))
        var rng = Xoshiro256StarStar(seed: 7)
        let symbols = (0..<10_000).map { _ in Int(rng.next() % 256) }
        let bytes = try RANSCoder.encode(symbols, table: table)
        #expect(try RANSCoder.decode(bytes, count: symbols.count, table: table) == symbols)
        #expect(bytes.count >= 10_000 && bytes.count <= 10_000 + 12)
    }

    @Test func refusesCorruptedTruncatedOrExtendedStreams() throws {
        let n = 1025
        let table = try FrequencyTable(counts: Self.counts(Self.skewed(count: 20_000, symbols: n, seed: 8), symbols: n))
        let symbols = Self.skewed(count: 300, symbols: n, seed: 9)
        let bytes = try RANSCoder.encode(symbols, table: table)
        for i in bytes.indices {
            for bit in [0, 3, 7] {
                var bad = bytes
                bad[i] ^= UInt8(1 << bit)
                #expect(throws: EntropyCodingError.self, "flip of bit \(bit) in byte \(i) of \(bytes.count)") {
                    try RANSCoder.decode(bad, count: symbols.count, table: table)
                }
            }
        }
        #expect(throws: EntropyCodingError.self) { try RANSCoder.decode(Array(bytes.dropLast()), count: symbols.count, table: table) }
        #expect(throws: EntropyCodingError.self) { try RANSCoder.decode(bytes + [0], count: symbols.count, table: table) }
        #expect(throws: EntropyCodingError.self) { try RANSCoder.decode(bytes, count: symbols.count + 1, table: table) }
        let other = try FrequencyTable(counts: (0..<n).map { $0 % 7 + 1 })
        #expect(throws: EntropyCodingError.self) { try RANSCoder.decode(bytes, count: symbols.count, table: other) }
        #expect(throws: EntropyCodingError.self) { try RANSCoder.encode([n], table: table) }
    }
}
