import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Error-targeted pursuit and entropy coding on the real model's keys and values, with
/// the project's dictionary.
@Suite(.enabled(if: RealAssets.available, "needs the SmolLM2 model (scripts/setup.sh)"), .serialized)
struct RealCSRCodingTests {
    static let model = Result { try LlamaModel(path: RealAssets.model) }
    static let dictionary = Result { try CSRDictionary.load(path: ProjectDictionary.path) }

    static func tokens(_ text: String, count: Int) throws -> [Int32] {
        let tokenizer = try BPETokenizer(gguf: try GGUFFile(path: RealAssets.model))
        let t = tokenizer.encode(try String(contentsOfFile: RealAssets.text(text), encoding: .utf8), addSpecial: false, parseSpecial: false)
        return Array(t.prefix(count))
    }

    /// Feeds `tokens` in `batches` (sizes), calling `after(cache)` after each forward call.
    static func run(_ tokens: [Int32], batches: [Int], cache: CSRCache, after: (CSRCache) throws -> Void) throws {
        let model = try Self.model.get()
        var at = 0
        for n in batches {
            var h = try model.embed(Array(tokens[at..<at + n]))
            try model.forward(&h, count: n, cache: cache)
            try after(cache)
            at += n
        }
    }

    @Test func errorTargetedPursuitMeetsItsBudgetOnRealVectorsOrGuardsThem() throws {
        let model = try Self.model.get(), dict = try Self.dictionary.get()
        let budget: Float = 0.1
        let codec = try CSRCodec(dictionary: dict, settings: try CSRSettings(parsing: "csr:err=\(budget),coef=i8", valueChunks: 2))
        let cache = try #require(model.makeCache(.csr(codec), capacity: 256) as? CSRCache)
        cache.keepsLatestExactRows = true
        var counts: [Int: Int] = [:], guarded = 0, rows = 0
        try Self.run(try Self.tokens("cfi-ch4.txt", count: 160), batches: [128, 16, 16], cache: cache) { c in
            // The latest append is still held exactly: the originals of its rows.
            for s in c.counts.indices {
                let p = try #require(c.pending[s])
                for (stream, x) in [(c.keyStreams[s], p.keys), (c.valueStreams[s], p.values)] {
                    let first = p.start * c.geometry.rowWidth / stream.m
                    for k in CSRErrorTargetedTests.checkBudget(stream, first: first, originals: x, budget: budget) { counts[k, default: 0] += 1 }
                    rows += x.count / stream.m
                }
            }
        }
        guarded = (cache.keyStreams + cache.valueStreams).reduce(0) { $0 + $1.guardRows.count }
        #expect(counts.keys.count > 4, "pair counts \(counts)")
        #expect(guarded < rows / 2, "\(guarded) of \(rows) rows guarded")
        #expect(cache.byteCount < cache.residentByteCount)
    }

    @Test func realStreamsRoundTripEntropyCodedBelowFixedWidth() throws {
        let model = try Self.model.get(), dict = try Self.dictionary.get()
        // Tables from calibration text (never the text coded below).
        let plain = try CSRCodec(dictionary: dict, settings: try CSRSettings(parsing: "csr:16,coef=i8", valueChunks: 2))
        let calib = try #require(model.makeCache(.csr(plain), capacity: 512) as? CSRCache)
        try Self.run(try Self.tokens("cfi-calib.txt", count: 512), batches: [512], cache: calib) { _ in }
        let usage = calib.atomUsage()
        let tables = try CSREntropyTables(keyCounts: usage.keys, valueCounts: usage.values, source: "test: 512 tokens of cfi-calib")
        let codec = try CSRCodec(dictionary: try dict.withEntropyTables(tables),
                                 settings: try CSRSettings(parsing: "csr:16,coef=i8,ec=rans", valueChunks: 2))
        let cache = try #require(model.makeCache(.csr(codec), capacity: 256) as? CSRCache)
        try Self.run(try Self.tokens("cfi-ch4.txt", count: 192), batches: [160, 16, 16], cache: cache) { _ in }
        let bytes = try cache.serialize(layers: 0..<30)
        let back = try CSRCache.deserialize(bytes, capacity: 256, rope: cache.rope, codec: codec)
        #expect(try back.serialize(layers: 0..<30) == bytes)
        for s in [0, 17, 29] {
            #expect(back.keyStreams[s].indexBytes == cache.keyStreams[s].indexBytes)
            #expect(back.valueStreams[s].coefficients8 == cache.valueStreams[s].coefficients8)
        }
        // The coded size is the ideal cost of the indices under the tables (within 1%
        // and the 8 bytes of state and checksum per stream), and about the fixed 10 (keys)
        // and 9 (values) bits: static tables gain little, because NeuralDict's diversity
        // term spreads atom usage evenly (tables from this little calibration text can
        // even lose a little, out of sample).
        for (streams, tables, fixed) in [(cache.keyStreams, tables.keys, 10.0), (cache.valueStreams, tables.values, 9.0)] {
            var coded = 0, ideal = 0.0, indices = 0
            for (s, stream) in streams.enumerated() {
                let table = tables[dict.keys.chunks == 1 && fixed == 10 ? dict.keys.group(ofLayer: s) : dict.values.group(ofLayer: s)]
                let used = stream.usedIndices(0..<stream.rows)
                ideal += used.reduce(0.0) { $0 + table.cost(min(Int($1), table.symbolCount - 1)) }
                coded += stream.codedIndices().bytes.count
                indices += used.count
            }
            #expect(Double(coded) <= ideal / 8 * 1.01 + Double(8 * streams.count), "\(coded) bytes, ideal \(ideal / 8)")
            #expect(Double(coded * 8) / Double(indices) < fixed + 0.1, "\(Double(coded * 8) / Double(indices)) bits/index")
        }
        #expect(cache.byteCount < cache.residentByteCount)
    }

    /// Huffman-coded coefficients on the real model's keys and values: lossless (a
    /// serialized cache reads back to the same codes) and the coefficients and scales of
    /// keys take under 75% of their fixed-width bytes, values under 90% (68% and 83%
    /// measured on these 320 tokens of alice29).
    @Test func realCoefficientsCodeLosslesslyInFewerBits() throws {
        let model = try Self.model.get(), dict = try Self.dictionary.get()
        let spec = "csr:k=9,v=5,coef=i6,alg=omp,ec=gaps"
        let plain = try CSRCodec(dictionary: dict, settings: try CSRSettings(parsing: spec, valueChunks: 2))
        let coded = try CSRCodec(dictionary: dict, settings: try CSRSettings(parsing: spec + "+coef", valueChunks: 2))
        let tokens = try Self.tokens("alice29.txt", count: 320)
        let a = try #require(model.makeCache(.csr(plain), capacity: 512) as? CSRCache)
        let b = try #require(model.makeCache(.csr(coded), capacity: 512) as? CSRCache)
        try Self.run(tokens, batches: [256, 64], cache: a) { _ in }
        try Self.run(tokens, batches: [256, 64], cache: b) { _ in }
        for (plainStreams, codedStreams, bound) in [(a.keyStreams, b.keyStreams, 0.75), (a.valueStreams, b.valueStreams, 0.9)] {
            var fixed = 0, entropy = 0
            for (x, y) in zip(plainStreams, codedStreams) {
                #expect(x.coefficients8 == y.coefficients8 && x.scales == y.scales)
                let used = (0..<x.rows).reduce(0) { $0 + x.pairCount($1) }
                fixed += x.storedCoefficientBytes(used) + 2 * x.rows
                entropy += y.byteCount - (x.byteCount - (x.storedCoefficientBytes(used) + 2 * x.rows))
            }
            #expect(Double(entropy) < bound * Double(fixed), "\(entropy) bytes coded against \(fixed) fixed-width")
        }
        let bytes = try b.serialize(layers: 0..<30)
        let back = try CSRCache.deserialize(bytes, capacity: 512, rope: b.rope, codec: coded)
        #expect(try back.serialize(layers: 0..<30) == bytes)
        for s in [0, 13, 29] { #expect(back.keyStreams[s].coefficients8 == b.keyStreams[s].coefficients8) }
    }
}
