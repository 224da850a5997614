import Foundation
import Testing
@testable import SparseCoding

@Suite struct GapCodingTests {
    /// `rows` rows of `count[r]` indices below n, ascending, drawn uniformly (with repeats
    /// when `repeats`), as a pursuit's sorted pairs.
    static func rows(_ counts: [Int], below n: Int, repeats: Bool, seed: UInt64) -> [UInt16] {
        var rng = Xoshiro256StarStar(seed: seed)
        var out: [UInt16] = []
        for c in counts {
            var row: [UInt16] = []
            while row.count < c {
                let v = UInt16(rng.next() % UInt64(n))
                if repeats || !row.contains(v) { row.append(v) }
            }
            out += row.sorted()
        }
        return out
    }

    static func decode(_ bytes: [UInt8], _ counts: [Int], k: Int, limit: Int) throws -> [UInt16] {
        try bytes.withUnsafeBytes { try GapCoding.decode($0, rowCounts: counts, parameter: k, limit: limit) }
    }

    @Test func roundTripsRowsAtEveryParameter() throws {
        for (n, counts, repeats, seed) in [(1024, Array(repeating: 16, count: 300), false, 1), (512, Array(repeating: 8, count: 500), true, 2),
                                           (1040, [0, 3, 16, 0, 1, 16, 7], true, 3), (2, [5, 0, 5], true, 4), (1024, [], false, 5)] {
            let values = Self.rows(counts, below: n, repeats: repeats, seed: UInt64(seed))
            let gaps = GapCoding.gaps(values, rowCounts: counts)
            for k in 0...GapCoding.maxParameter {
                let bytes = GapCoding.encode(gaps, parameter: k)
                #expect(bytes.count == GapCoding.byteCount(bits: GapCoding.bitCount(gaps, parameter: k)))
                #expect(try Self.decode(bytes, counts, k: k, limit: n) == values, "N \(n), k \(k)")
            }
            let best = GapCoding.bestParameter(gaps)
            #expect(best.bits == (0...GapCoding.maxParameter).map { GapCoding.bitCount(gaps, parameter: $0) }.min())
        }
    }

    /// Uniform 16-atom sets of 1,024 atoms: the best Rice code is within 0.4 bits per index
    /// of log2(C(N, s)) / s (7.23), far under the 10 bits of a fixed-width index.
    @Test func setsCostNearTheirCombinatorialBound() throws {
        let counts = Array(repeating: 16, count: 2000)
        let values = Self.rows(counts, below: 1024, repeats: false, seed: 11)
        let best = GapCoding.bestParameter(GapCoding.gaps(values, rowCounts: counts))
        var bound = 0.0
        for i in 0..<16 { bound += log2(Double(1024 - i)) - log2(Double(i + 1)) }
        bound /= 16
        let perIndex = Double(best.bits) / Double(values.count)
        #expect(perIndex > bound && perIndex < bound + 0.4, "\(perIndex) bits per index, bound \(bound)")
        #expect(best.parameter == 5 || best.parameter == 6)
    }

    @Test func refusesDamagedStreams() throws {
        let counts = Array(repeating: 8, count: 40)
        let values = Self.rows(counts, below: 512, repeats: true, seed: 21)
        let gaps = GapCoding.gaps(values, rowCounts: counts)
        let k = GapCoding.bestParameter(gaps).parameter
        let bytes = GapCoding.encode(gaps, parameter: k)
        #expect(try Self.decode(bytes, counts, k: k, limit: 512) == values)
        // Every single flipped bit, in the codes or the checksum.
        for bit in 0..<bytes.count * 8 {
            var damaged = bytes
            damaged[bit / 8] ^= 1 << UInt8(bit % 8)
            #expect(throws: EntropyCodingError.self) { try Self.decode(damaged, counts, k: k, limit: 512) }
        }
        #expect(throws: EntropyCodingError.self) { try Self.decode(Array(bytes.dropLast()), counts, k: k, limit: 512) }
        #expect(throws: EntropyCodingError.self) { try Self.decode(bytes + [0], counts, k: k, limit: 512) }
        #expect(throws: EntropyCodingError.self) { try Self.decode([], counts, k: k, limit: 512) }
        // The same stream read as more rows, another parameter, or fewer atoms.
        #expect(throws: EntropyCodingError.self) { try Self.decode(bytes, counts + [8], k: k, limit: 512) }
        #expect(throws: EntropyCodingError.self) { try Self.decode(bytes, counts, k: 16, limit: 512) }
        let top = Int(values.max()!)
        #expect(throws: EntropyCodingError.self) { try Self.decode(bytes, counts, k: k, limit: top) }
    }
}
