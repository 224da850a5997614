import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Error-targeted pursuit (`csr:err=E`) and entropy-coded indices (`ec=rans`) on the
/// small CSR fixture.
@Suite struct CSRErrorTargetedTests {
    typealias F = CSRFixture

    /// Row `r` of `stream` as reads see it: the guard bank's copy, or the codes.
    static func decoded(_ stream: CSRCodeStream, row r: Int) -> [Float] {
        if let g = stream.guardRows.firstIndex(of: UInt32(r)) {
            return (0..<stream.m).map { HalfPrecision.float(stream.guardValues[g * stream.m + $0]) }
        }
        var out = [Float](repeating: 0, count: stream.m)
        stream.atomBits.withUnsafeBufferPointer { a in
            stream.indexBytes.withUnsafeBufferPointer { ib in
                out.withUnsafeMutableBufferPointer { o in
                    stream.decodeRow(r, into: o.baseAddress!, atoms: a.baseAddress!, indexBytes: ib.baseAddress!)
                }
            }
        }
        return out
    }

    /// Every row of `stream` (rows first ..< first + count, whose originals are `x`,
    /// (count, m)) is within `budget` or kept exactly by the guard bank; returns the pair
    /// counts seen.
    static func checkBudget(_ stream: CSRCodeStream, first: Int, originals x: [Float], budget: Float) -> [Int] {
        let m = stream.m, count = x.count / m
        var seen: [Int] = []
        for r in 0..<count {
            let y = decoded(stream, row: first + r)
            let rel = x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { CSRCodeStream.relativeError(xp.baseAddress! + r * m, $0.baseAddress!, m) } }
            let guarded = stream.guardRows.contains(UInt32(first + r))
            #expect(rel <= budget * (1 + 1e-5) || guarded, "row \(first + r): relative error \(rel), budget \(budget), \(stream.pairCount(first + r)) pairs")
            #expect(stream.pairCount(first + r) <= stream.sparsity)
            if guarded { #expect(stream.pairCount(first + r) == 0) }
            seen.append(stream.pairCount(first + r))
        }
        return seen
    }

    @Test func pursuitMeetsItsBudgetOnEveryVectorOrGuardsIt() throws {
        for format in CoefficientFormat.allCases {
            for budget: Float in [0.05, 0.3] {
                let settings = try CSRSettings(parsing: "csr:k=6,v=3,err=\(budget)", valueChunks: 2)
                let codec = try F.randomCodec(atoms: 48, seed: 30) {
                    $0 = settings
                    $0.coefficients = format
                }
                let c = codec.makeCache(geometry: F.geometry, rope: F.rope)
                let k = F.rows(40, seed: 31), v = F.rows(40, seed: 32)
                try F.fill(c, k, v, batch: 7)
                var counts: [Int] = []
                for s in 0..<2 {
                    counts += Self.checkBudget(c.keyStreams[s], first: 0, originals: k, budget: budget)
                    counts += Self.checkBudget(c.valueStreams[s], first: 0, originals: v, budget: budget)
                }
                // The pair count varies from vector to vector.
                #expect(Set(counts).count > 2, "pair counts \(Set(counts)) at err=\(budget)")
                if budget == 0.05 { #expect(c.keyStreams.contains { !$0.guardRows.isEmpty }) }
            }
        }
    }

    @Test func settingsParseAndPrintTheBudget() throws {
        let s = try CSRSettings(parsing: "csr:err=0.1,coef=i8", valueChunks: 2)
        #expect(s.errorBudget == 0.1 && s.keySparsity == 16 && s.valueSparsity == 8 && s.guardFraction == 1)
        #expect(try CSRSettings(parsing: s.description, valueChunks: 2) == s)
        let capped = try CSRSettings(parsing: "csr:24,err=0.05,guard=0.01,ec=rans", valueChunks: 2)
        #expect(capped.keySparsity == 24 && capped.guardFraction == 0.01 && capped.entropyCoded)
        #expect(try CSRSettings(parsing: capped.description, valueChunks: 2) == capped)
        for bad in ["csr:err=0", "csr:err=1.5", "csr:err=0.1,alg=omp", "csr:8,ec=zip"] {
            #expect(throws: CSRError.self) { try CSRSettings(parsing: bad) }
        }
    }

    /// A codec whose dictionary has tables counted from a cache coded like `spec`.
    static func codecWithTables(_ spec: String, atoms: Int = 48) throws -> CSRCodec {
        let plainSpec = spec.replacingOccurrences(of: ",ec=rans+coef", with: "").replacingOccurrences(of: ",ec=rans", with: "")
        let settings = try CSRSettings(parsing: plainSpec, valueChunks: 2)
        let plain = try F.randomCodec(atoms: atoms, seed: 40) { $0 = settings }
        let calib = plain.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(calib, F.rows(60, seed: 41), F.rows(60, seed: 42), batch: 60)
        let usage = calib.atomUsage()
        let tables = try CSREntropyTables(keyCounts: usage.keys, valueCounts: usage.values, source: "test")
        return try CSRCodec(dictionary: try plain.dictionary.withEntropyTables(tables),
                            settings: try CSRSettings(parsing: spec, valueChunks: 2))
    }

    @Test func storedFormRoundTripsAndIsWhatByteCountCounts() throws {
        for spec in ["csr:k=6,v=3,err=0.2", "csr:k=6,v=3,err=0.2,coef=i8,online=3", "csr:k=4,v=2,ec=rans",
                     "csr:k=6,v=3,err=0.1,coef=i8,online=3,ec=rans", "csr:k=3,v=2,coef=i8,guard=0.1,guard-error=0.3",
                     "csr:k=4,v=2,ec=gaps", "csr:k=6,v=3,err=0.1,coef=i8,online=3,ec=gaps",
                     "csr:k=6,v=3,coef=i6,alg=omp,sink=1,ec=gaps", "csr:k=6,v=3,coef=i6,alg=omp,ec=gaps+coef",
                     "csr:k=6,v=3,err=0.1,coef=i7,online=3,ec=rans+coef"] {
            let codec = try Self.codecWithTables(spec)
            var framing: Set<Int> = []
            for tokens in [12, 31] {
                let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
                try F.fill(a, F.rows(tokens, seed: UInt64(50 + tokens)), F.rows(tokens, seed: UInt64(60 + tokens)), batch: 5)
                let bytes = try a.serialize(layers: 0..<2)
                framing.insert(bytes.count - a.byteCount)
                let b = try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: codec)
                #expect(try b.serialize(layers: 0..<2) == bytes, "\(spec)")
                #expect(b.byteCount == a.byteCount && b.residentByteCount == a.residentByteCount)
                if !codec.settings.entropyCoded && !codec.settings.gapCoded && !codec.settings.coefficientCoded && codec.settings.errorBudget == nil {
                    #expect(a.byteCount == a.residentByteCount)
                }
                if codec.settings.errorBudget != nil { #expect(a.byteCount < a.residentByteCount) }
                // The fixed-width memory is identical, so attention reads the same values
                // (the pending exact rows of `a` aside: append one more token to both first).
                for c in [a, b] { try F.fill(c, F.rows(1, seed: 70), F.rows(1, seed: 71), batch: 1) }
                for layer in 0..<2 {
                    for h in 0..<2 {
                        let (ak, av) = F.read(a, layer: layer, head: h), (bk, bv) = F.read(b, layer: layer, head: h)
                        #expect(ak == bk && av == bv, "\(spec)")
                    }
                }
                // The append payload of the last tokens parses completely.
                let tail = try a.appendPayload(layers: 0..<2, tokens: tokens - 3..<tokens)
                let checked = try CSRCache.checkAppendPayload(tail, codec: codec)
                #expect(checked.first == tokens - 3 && checked.tokens == 3)
                #expect(throws: KVCacheError.self) { try CSRCache.checkAppendPayload(tail + [1], codec: codec) }
            }
            // Stored bytes = payload less a fixed framing (header, stamp, two u32 per stream).
            #expect(framing.count == 1, "\(spec): framing \(framing)")
        }
    }

    /// Reads `bytes` as a section of all of `stream`'s rows into a fresh stream of its
    /// shape, as a receiving process would, and checks nothing is left over.
    static func readSection(_ bytes: [UInt8], like stream: CSRCodeStream, settings: CSRSettings) throws {
        let scratch = CSRCodeStream(offline: stream.offline, encoder: { throw CSRError.dictionaryRequired }, settings: settings,
                                    sparsity: stream.sparsity, entropyTable: stream.entropyTable)
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            try scratch.readRows(count: stream.rows, from: &r, atomLimit: stream.offline.atomCount)
            #expect(r.remaining == 0)
        }
    }

    /// Writes all of `stream`'s rows as a section, reads it back, then flips `flip` in each
    /// byte of the coded indices, and the `header` bytes after their u32 length before
    /// them: every damaged section is refused.
    static func expectFlipsRefused(_ stream: CSRCodeStream, settings: CSRSettings, header: Int, flip: UInt8) throws {
        var w = BinaryWriter(capacity: 0)
        stream.writeRows(0..<stream.rows, to: &w)
        let countBytes = BitPacking.byteCount(count: stream.rows, width: stream.countWidth)
        let coded = stream.codedIndices().bytes.count
        #expect(coded > 4)
        try readSection(w.bytes, like: stream, settings: settings)
        for i in countBytes + 4..<countBytes + 4 + header + coded {
            var bad = w.bytes
            bad[i] ^= flip
            #expect(throws: KVCacheError.self, "flip in byte \(i - countBytes - 4) of \(header) header and \(coded) coded") {
                try readSection(bad, like: stream, settings: settings)
            }
        }
    }

    @Test func damagedCodedIndicesAreRefused() throws {
        let codec = try Self.codecWithTables("csr:k=6,v=3,err=0.1,ec=rans")
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(20, seed: 80), F.rows(20, seed: 81), batch: 20)
        try Self.expectFlipsRefused(a.keyStreams[0], settings: codec.settings, header: 0, flip: 0x10)
        // Another process without ec, or with other tables, refuses the payload.
        let bytes = try a.serialize(layers: 0..<2)
        let plain = try CSRCodec(dictionary: codec.dictionary, settings: try CSRSettings(parsing: "csr:k=6,v=3,err=0.1", valueChunks: 2))
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: plain) }
        let retabled = try CSRCodec(dictionary: codec.dictionary.withEntropyTables(
            CSREntropyTables(keyCounts: [[Int](repeating: 1, count: 49)], valueCounts: [[Int](repeating: 1, count: 49)], source: "flat")),
            settings: codec.settings)
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: retabled) }
    }

    @Test func entropyCodingNeedsTables() throws {
        #expect(throws: CSRError.self) { try F.randomCodec(atoms: 20, seed: 1) { $0.entropyCoded = true } }
    }
}
