import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// `ec=gaps`: each row's pairs held in ascending atom order, the indices stored as
/// Rice-coded gaps (`GapCoding`), on the small CSR fixture.
@Suite struct CSRGapCodingTests {
    typealias F = CSRFixture

    /// The used indices of every row of `stream`, row by row.
    static func rowIndices(_ stream: CSRCodeStream) -> [[UInt16]] {
        (0..<stream.rows).map { stream.usedIndices($0..<$0 + 1) }
    }

    @Test func rowsAscendAndHoldTheSamePairsAsWithout() throws {
        for spec in ["csr:k=8,v=4", "csr:k=8,v=4,coef=i8", "csr:k=8,v=4,coef=i6,alg=omp", "csr:k=8,v=4,err=0.1,coef=i8,guard=0.05"] {
            let plain = try F.randomCodec(atoms: 256, seed: 90) { $0 = try! CSRSettings(parsing: spec, valueChunks: 2) }
            let sorted = try CSRCodec(dictionary: plain.dictionary, settings: try CSRSettings(parsing: spec + ",ec=gaps", valueChunks: 2))
            let k = F.rows(30, seed: 91), v = F.rows(30, seed: 92)
            let a = plain.makeCache(geometry: F.geometry, rope: F.rope), b = sorted.makeCache(geometry: F.geometry, rope: F.rope)
            try F.fill(a, k, v, batch: 7)
            try F.fill(b, k, v, batch: 7)
            for s in 0..<2 {
                for (x, y) in [(a.keyStreams[s], b.keyStreams[s]), (a.valueStreams[s], b.valueStreams[s])] {
                    #expect(x.guardRows == y.guardRows, "\(spec)")
                    for (r, (rx, ry)) in zip(Self.rowIndices(x), Self.rowIndices(y)).enumerated() {
                        // The same atoms, now ascending (an atom MP took twice stays twice).
                        #expect(ry == rx.sorted(), "\(spec) row \(r)")
                    }
                }
            }
            // Sums of the same pairs in another order: the rows read back agree to rounding.
            try F.fill(a, F.rows(1, seed: 93), F.rows(1, seed: 94), batch: 1)
            try F.fill(b, F.rows(1, seed: 93), F.rows(1, seed: 94), batch: 1)
            for layer in 0..<2 {
                for h in 0..<2 {
                    let (ak, av) = F.read(a, layer: layer, head: h), (bk, bv) = F.read(b, layer: layer, head: h)
                    for (x, y) in zip(ak + av, bk + bv) { #expect(abs(x - y) <= 1e-5 * max(1, abs(x)), "\(spec)") }
                }
            }
        }
    }

    /// 16 key pairs over 1,024 atoms: the stored form of the indices shrinks by over a fifth
    /// (about 7.6 bits per index against 10); 8 value pairs, by over a tenth (about 8.5
    /// against 10). The rest of the stored form is unchanged.
    @Test func storedFormIsSmallerThanFixedWidth() throws {
        let plain = try F.randomCodec(atoms: 1024, seed: 95) { $0 = try! CSRSettings(parsing: "csr:k=16,v=8,coef=i8", valueChunks: 2) }
        let gaps = try CSRCodec(dictionary: plain.dictionary, settings: try CSRSettings(parsing: "csr:k=16,v=8,coef=i8,ec=gaps", valueChunks: 2))
        let k = F.rows(120, seed: 96), v = F.rows(120, seed: 97)
        let a = plain.makeCache(geometry: F.geometry, rope: F.rope), b = gaps.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, k, v, batch: 40)
        try F.fill(b, k, v, batch: 40)
        #expect(a.residentByteCount == b.residentByteCount)
        for s in 0..<2 {
            for (x, y, bound) in [(a.keyStreams[s], b.keyStreams[s], 0.8), (a.valueStreams[s], b.valueStreams[s], 0.9)] {
                let pairs = (0..<x.rows).reduce(0) { $0 + x.pairCount($1) }
                let fixedBits = pairs * x.width, gapBits = (y.byteCount - (x.byteCount - (fixedBits + 7) / 8) - 9) * 8
                #expect(Double(gapBits) < bound * Double(fixedBits), "\(gapBits) bits of gaps against \(fixedBits) fixed-width")
            }
        }
        #expect(Double(b.byteCount) < 0.9 * Double(a.byteCount))
    }

    /// The byte count keeps a running tally of gap bits (a worker asks for it every step):
    /// after appends, a truncation and different rows in place of the cut ones, it equals
    /// the count of a cache that coded the final rows from scratch, and the stored form.
    @Test func byteCountFollowsAppendsAndTruncations() throws {
        let codec = try F.randomCodec(atoms: 256, seed: 101) { $0 = try! CSRSettings(parsing: "csr:k=8,v=4,coef=i8,ec=gaps", valueChunks: 2) }
        let (a, b) = try F.truncatedAndFresh(codec, seed: 102)
        #expect(a.byteCount == b.byteCount)
        for s in 0..<2 {
            for stream in [a.keyStreams[s], a.valueStreams[s]] {
                #expect(stream.codedIndices().bytes.count == GapCoding.byteCount(bits: stream.gapCodedBits()))
            }
        }
        #expect(try a.serialize(layers: 0..<2) == b.serialize(layers: 0..<2))
    }

    @Test func damagedGapCodesAreRefused() throws {
        let codec = try F.randomCodec(atoms: 256, seed: 98) { $0 = try! CSRSettings(parsing: "csr:k=8,v=4,err=0.1,ec=gaps", valueChunks: 2) }
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(20, seed: 99), F.rows(20, seed: 100), batch: 20)
        // Every coded byte and the Rice parameter (after the u32 length).
        try CSRErrorTargetedTests.expectFlipsRefused(a.keyStreams[0], settings: codec.settings, header: 1, flip: 0x04)
        // A process without ec=gaps refuses the payload.
        let bytes = try a.serialize(layers: 0..<2)
        let plain = try CSRCodec(dictionary: codec.dictionary, settings: try CSRSettings(parsing: "csr:k=8,v=4,err=0.1", valueChunks: 2))
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: plain) }
    }

    @Test func settingsSpellAndParseGaps() throws {
        let s = try CSRSettings(parsing: "csr:16,coef=i6,ec=gaps", valueChunks: 2)
        #expect(s.gapCoded && !s.entropyCoded)
        #expect(s.description.contains("ec=gaps"))
        #expect(try CSRSettings(parsing: s.description, valueChunks: 2) == s)
        #expect(try !CSRSettings(parsing: "csr:16,ec=gaps,ec=none", valueChunks: 2).gapCoded)
        #expect(throws: CSRError.self) { try CSRSettings(parsing: "csr:16,ec=huffman", valueChunks: 2) }
    }
}
