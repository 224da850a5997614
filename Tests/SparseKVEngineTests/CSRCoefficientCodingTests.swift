import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// `ec=...+coef`: the int8 coefficients and scales Huffman-coded in the stored and
/// transferred form (`CoefficientCoding`), on the small CSR fixture.
@Suite struct CSRCoefficientCodingTests {
    typealias F = CSRFixture

    static func codec(_ spec: String, seed: UInt64 = 110) throws -> CSRCodec {
        try F.randomCodec(atoms: 256, seed: seed) { $0 = try! CSRSettings(parsing: spec, valueChunks: 2) }
    }

    /// A stream's stored form: its section of all rows.
    static func section(_ stream: CSRCodeStream) -> [UInt8] {
        var w = BinaryWriter(capacity: 0)
        stream.writeRows(0..<stream.rows, to: &w)
        return w.bytes
    }

    @Test func settingsSpellAndParseCoefficientCoding() throws {
        for (spec, indices) in [("csr:16,coef=i6,ec=gaps+coef", CSRSettings.IndexCoding.gaps), ("csr:16,coef=i8,ec=coef", .fixed),
                                ("csr:16,coef=i5,ec=rans+coef", .rans)] {
            let s = try CSRSettings(parsing: spec, valueChunks: 2)
            #expect(s.coefficientCoded && s.indexCoding == indices, "\(spec)")
            #expect(try CSRSettings(parsing: s.description, valueChunks: 2) == s, "\(s.description)")
        }
        #expect(try CSRSettings(parsing: "csr:16,coef=i6,ec=gaps+coef", valueChunks: 2).description.contains("ec=gaps+coef"))
        #expect(try !CSRSettings(parsing: "csr:16,coef=i6,ec=gaps+coef,ec=gaps", valueChunks: 2).coefficientCoded)
        for bad in ["csr:16,ec=gaps+coef", "csr:16,coef=f16,ec=coef", "csr:16,coef=i6,ec=coef+gaps", "csr:16,coef=i6,ec=none+coef",
                    "csr:16,coef=i6,ec=gaps+", "csr:16,coef=i6,ec=gaps+rans"] {
            #expect(throws: CSRError.self, "\(bad)") { try CSRSettings(parsing: bad, valueChunks: 2) }
        }
    }

    /// Coding is lossless and only in the stored form: memory holds the same codes as
    /// without it, a serialized cache reads back to the same codes, and the stored form
    /// is smaller by over 5% on these random rows (9-10% measured: each row's peak and the
    /// scales' exponents are nearly free; the real model's keys, far from uniform, gain more). ``CSRCodeStream/byteCount`` is the section's size exactly.
    @Test func storedFormIsSmallerAndLossless() throws {
        for spec in ["csr:k=8,v=4,coef=i6,alg=omp,ec=gaps", "csr:k=8,v=4,coef=i8", "csr:k=6,v=3,err=0.1,coef=i7,guard=0.05"] {
            let plain = try Self.codec(spec)
            let coded = try CSRCodec(dictionary: plain.dictionary, settings: try CSRSettings(
                parsing: spec.contains("ec=gaps") ? spec.replacingOccurrences(of: "ec=gaps", with: "ec=gaps+coef") : spec + ",ec=coef", valueChunks: 2))
            let k = F.rows(120, seed: 111), v = F.rows(120, seed: 112)
            let a = plain.makeCache(geometry: F.geometry, rope: F.rope), b = coded.makeCache(geometry: F.geometry, rope: F.rope)
            try F.fill(a, k, v, batch: 40)
            try F.fill(b, k, v, batch: 40)
            #expect(a.residentByteCount == b.residentByteCount)
            for s in 0..<2 {
                for (x, y) in [(a.keyStreams[s], b.keyStreams[s]), (a.valueStreams[s], b.valueStreams[s])] {
                    #expect(x.indexBytes == y.indexBytes && x.coefficients8 == y.coefficients8 && x.scales == y.scales, "\(spec)")
                    for stream in [x, y] {
                        #expect(Self.section(stream).count - 4 + stream.onlineAtoms.count * 2 == stream.byteCount, "\(spec)")
                    }
                    #expect(Double(y.byteCount) < Double(x.byteCount), "\(spec): \(y.byteCount) coded against \(x.byteCount)")
                }
            }
            #expect(Double(b.byteCount) < 0.95 * Double(a.byteCount), "\(spec): \(b.byteCount) coded against \(a.byteCount)")
            let back = try CSRCache.deserialize(try b.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: coded)
            #expect(try back.serialize(layers: 0..<2) == b.serialize(layers: 0..<2))
            for s in 0..<2 {
                #expect(back.keyStreams[s].coefficients8 == b.keyStreams[s].coefficients8 && back.valueStreams[s].scales == b.valueStreams[s].scales)
                #expect(back.keyStreams[s].byteCount == b.keyStreams[s].byteCount)
            }
        }
    }

    /// A section of a row or two keeps fixed width, as its code tables would outweigh its
    /// codes; so the stored form is never larger than without coding, but for the mode byte.
    @Test func smallSectionsStayFixedWidth() throws {
        let plain = try Self.codec("csr:k=8,v=4,coef=i6")
        let coded = try Self.codec("csr:k=8,v=4,coef=i6,ec=coef")
        let a = plain.makeCache(geometry: F.geometry, rope: F.rope), b = coded.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(1, seed: 113), F.rows(1, seed: 114), batch: 1)
        try F.fill(b, F.rows(1, seed: 113), F.rows(1, seed: 114), batch: 1)
        for s in 0..<2 {
            for (x, y) in [(a.keyStreams[s], b.keyStreams[s]), (a.valueStreams[s], b.valueStreams[s])] {
                #expect(y.byteCount == x.byteCount + 1)
            }
        }
    }

    /// The byte count keeps running symbol counts (a worker asks for it every step): after
    /// appends, a truncation and other rows in place of the cut ones, it equals that of a
    /// cache that coded the final rows from scratch, and the stored forms are equal.
    @Test func byteCountFollowsAppendsAndTruncations() throws {
        let codec = try Self.codec("csr:k=8,v=4,coef=i6,ec=gaps+coef")
        let (a, b) = try F.truncatedAndFresh(codec, seed: 115)
        #expect(a.byteCount == b.byteCount)
        for s in 0..<2 {
            for stream in [a.keyStreams[s], a.valueStreams[s]] {
                #expect(Self.section(stream).count - 4 == stream.byteCount)
            }
        }
        #expect(try a.serialize(layers: 0..<2) == b.serialize(layers: 0..<2))
    }

    /// Every byte of the coded block, flipped, is refused; so is a payload read by a
    /// process that does not code coefficients.
    @Test func damagedCodedCoefficientsAreRefused() throws {
        let codec = try Self.codec("csr:k=8,v=4,coef=i6,ec=gaps+coef")
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(60, seed: 118), F.rows(60, seed: 119), batch: 60)
        let stream = a.keyStreams[0], bytes = Self.section(stream)
        try CSRErrorTargetedTests.readSection(bytes, like: stream, settings: codec.settings)
        // The block follows the gap-coded indices (u32 length, u8 parameter, codes), the
        // mode byte and its u32 length, and ends before the guard count.
        let indices = 4 + 1 + stream.codedIndices().bytes.count
        #expect(bytes[indices] == 1)
        let blockLength = bytes[indices + 1..<indices + 5].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(indices + 5 + blockLength + 4 == bytes.count)
        for i in indices..<indices + 5 + blockLength {
            var bad = bytes
            bad[i] ^= 0x08
            #expect(throws: KVCacheError.self, "flip in byte \(i - indices) of the coefficients") {
                try CSRErrorTargetedTests.readSection(bad, like: stream, settings: codec.settings)
            }
        }
        let plain = try CSRCodec(dictionary: codec.dictionary, settings: try CSRSettings(parsing: "csr:k=8,v=4,coef=i6,ec=gaps", valueChunks: 2))
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(try a.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: plain) }
    }
}
