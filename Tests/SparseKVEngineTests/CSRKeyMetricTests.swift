import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// The query-aware key metric: its weights on queries of known energy, the rotation average
/// it stands for, CSR caches coding keys in it, and the dictionary file that carries it.
@Suite struct CSRKeyMetricTests {
    typealias F = CSRFixture

    /// A metric over the fixture's shape with weights spread over three decades.
    static func metric(seed: UInt64 = 41) throws -> CSRKeyMetric {
        var g = SeededGenerator(seed: seed)
        let pairs = F.d / 2
        var w: [Float] = []
        for _ in 0..<F.model.layerCount * F.model.kvHeads {
            let raw = (0..<pairs).map { _ in Float(pow(10, Double.random(in: -1.5...1.5, using: &g))) }
            let mean = raw.reduce(0, +) / Float(pairs)
            w += raw.map { $0 / mean }
        }
        return try CSRKeyMetric(layerCount: F.model.layerCount, kvHeads: F.model.kvHeads, headDim: F.d,
                                pairWeights: w, source: "test")
    }

    static func codec(metric: CSRKeyMetric?, _ tweak: (inout CSRSettings) -> Void, keys: SparseDictionary) throws -> CSRCodec {
        var s = CSRSettings(keySparsity: F.d, valueSparsity: F.d / 2)
        tweak(&s)
        let dict = try CSRDictionary(
            model: F.model, keys: .init(chunks: 1, groups: [.init(layers: 0..<2, dictionary: keys)]),
            values: .init(chunks: 2, groups: [.init(layers: 0..<2, dictionary: try F.basis(F.d / 2))]), keyMetric: metric)
        return try CSRCodec(dictionary: dict, settings: s)
    }

    /// Rotates pair i of `x` by angles[i] as RoPE does: (a c - b s, a s + b c).
    static func rotated(_ x: [Float], _ angles: [Double]) -> [Float] {
        var y = x
        for (i, t) in angles.enumerated() {
            let c = cos(t), s = sin(t), a = Double(x[2 * i]), b = Double(x[2 * i + 1])
            y[2 * i] = Float(a * c - b * s)
            y[2 * i + 1] = Float(a * s + b * c)
        }
        return y
    }

    @Test func weightsOfQueriesWithKnownPairEnergies() throws {
        // 4 query heads on 2 KV heads; every query pair has a known amplitude and a random phase.
        let heads = 4, d = 8, pairs = 4, tokens = 6
        var g = SeededGenerator(seed: 1)
        let amplitude = { (j: Int, i: Int, t: Int) -> Double in Double(1 + j + 2 * i) * (t % 2 == 0 ? 1 : 2) }
        var q = [Float](repeating: 0, count: tokens * heads * d)
        for t in 0..<tokens {
            for j in 0..<heads {
                for i in 0..<pairs {
                    let phase = Double.random(in: 0..<2 * .pi, using: &g), a = amplitude(j, i, t)
                    q[(t * heads + j) * d + 2 * i] = Float(a * cos(phase))
                    q[(t * heads + j) * d + 2 * i + 1] = Float(a * sin(phase))
                }
            }
        }
        // RoPE rotates exactly these pairs: the energies are the same before and after it.
        var rotatedQ = q
        let rope = RoPE(headDim: d, ropeDimension: d, base: 10000)
        rotatedQ.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, rows: tokens, heads: heads, startPosition: 37) }
        var energy = QueryPairEnergy(layerCount: 2, kvHeads: 2, headDim: d)
        rotatedQ.withUnsafeBufferPointer { energy.add(layer: 1, queries: $0.baseAddress!, count: tokens, heads: heads) }
        for h in 0..<2 {
            let mean = energy.meanEnergy(layer: 1, kvHead: h)
            for i in 0..<pairs {
                // E|q_i|² over tokens and the two query heads of KV head h: amplitudes² with (1, 4) alternating.
                let expected = (2 * h..<2 * h + 2).map { j in (0..<tokens).map { pow(amplitude(j, i, $0), 2) }.reduce(0, +) }
                    .reduce(0, +) / Double(2 * tokens)
                #expect(abs(mean[i] - expected) <= 1e-4 * expected, "head \(h) pair \(i): \(mean[i]) vs \(expected)")
            }
        }
        #expect(energy.meanEnergy(layer: 0, kvHead: 0).allSatisfy { $0 == 0 })
        // No queries on layer 0: no metric. With them, weights are the energies over their mean.
        #expect(throws: CSRError.self) { try CSRKeyMetric(energy: energy, source: "") }
        q.withUnsafeBufferPointer { energy.add(layer: 0, queries: $0.baseAddress!, count: tokens, heads: heads) }
        let m = try CSRKeyMetric(energy: energy, source: "")
        for h in 0..<2 {
            let e = energy.meanEnergy(layer: 1, kvHead: h), mean = e.reduce(0, +) / Double(pairs)
            let w = m.pairWeights[(2 + h) * pairs..<(3 + h) * pairs]
            for (i, wi) in w.enumerated() { #expect(abs(Double(wi) - e[i] / mean) < 1e-5) }
            let scales = m.channelScales(layer: 1)
            #expect(abs(scales[h * d + 2 * 3] * scales[h * d + 2 * 3 + 1] - w[w.startIndex + 3]) < 1e-5)
        }
    }

    @Test func rotationAverageOfTheScoreErrorIsTheWeightedNorm() throws {
        // Mean over queries and over independent angles per pair of (q·R_θ e)² equals
        // ½ Σ_i E|q_i|² |e_i|². Angles on a grid of 6 per pair average trigonometric
        // polynomials of degree 2 exactly.
        let d = 6, pairs = 3, grid = 6
        var g = SeededGenerator(seed: 2)
        let queries = (0..<5).map { _ in (0..<d).map { _ in Float.random(in: -2...2, using: &g) } }
        let e = (0..<d).map { _ in Float.random(in: -1...1, using: &g) }
        var energy = QueryPairEnergy(layerCount: 1, kvHeads: 1, headDim: d)
        let flat = queries.flatMap { $0 }
        flat.withUnsafeBufferPointer { energy.add(layer: 0, queries: $0.baseAddress!, count: queries.count, heads: 1) }
        var sum = 0.0, n = 0
        for a in 0..<grid {
            for b in 0..<grid {
                for c in 0..<grid {
                    let angles = [a, b, c].map { 2 * Double.pi * Double($0) / Double(grid) + 0.3 }
                    let re = Self.rotated(e, angles)
                    for q in queries {
                        let s = zip(q, re).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                        sum += s * s
                        n += 1
                    }
                }
            }
        }
        let w = energy.meanEnergy(layer: 0, kvHead: 0).map { Float($0) }
        let formula = CSRKeyMetric.weightedError(e, pairWeights: w[0..<pairs])
        #expect(abs(sum / Double(n) - formula) <= 1e-5 * formula, "rotation average \(sum / Double(n)), formula \(formula)")
    }

    @Test func cacheInTheMetricScoresLikeTheDenseCache() throws {
        let metric = try Self.metric()
        let heads = 4, n = 24
        let k = F.rows(n, seed: 3), v = F.rows(n, seed: 4), k1 = F.rows(1, seed: 5), v1 = F.rows(1, seed: 6)
        var g = SeededGenerator(seed: 7)
        let q = (0..<heads * F.d).map { _ in Float.random(in: -1...1, using: &g) }
        func attend(_ c: any KVCache) throws -> [Float] {
            var out = [Float](repeating: 0, count: heads * F.d)
            try q.withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer {
                    try c.attend(layer: 1, queries: qp.baseAddress!, count: 1, heads: heads, scale: 0.5, into: $0.baseAddress!)
                }
            }
            return out
        }
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        // An exact basis (MP with s = d) and, with random atoms, every key in the guard bank:
        // keys held scaled, as codes or fp16 guard rows, must read and score as the originals.
        let exact = try Self.codec(metric: metric, { _ in }, keys: F.basis(F.d)).makeCache(geometry: F.geometry, rope: F.rope)
        let guarded = try Self.codec(metric: metric, { $0.keySparsity = 1; $0.guardFraction = 1; $0.guardError = 1e-4; $0.onlineAtoms = 0 },
                                     keys: SparseDictionary(randomAtomCount: 8, dimension: F.d, seed: 8))
            .makeCache(geometry: F.geometry, rope: F.rope)
        for c in [dense, exact, guarded] as [any KVCache] {
            try F.fill(c, k, v, batch: 9)
            try F.fill(c, k1, v1, batch: 1)
        }
        #expect(guarded.keyStreams[1].guardRows.count == (n + 1) * 2)
        let reference = try attend(dense)
        for c in [exact, guarded] {
            #expect(maxAbsDiff(F.read(c, layer: 1, head: 1).0, F.read(dense, layer: 1, head: 1).0) < 1e-2)
            #expect(maxAbsDiff(try attend(c), reference) < 1e-2)
            var viaReads = [Float](repeating: 0, count: heads * F.d)
            try viaReads.withUnsafeMutableBufferPointer {
                try c.referenceAttend(layer: 1, queries: q, count: 1, heads: heads, scale: 0.5, into: $0.baseAddress!)
            }
            #expect(maxAbsDiff(try attend(c), viaReads) < 1e-4)
        }
    }

    @Test func codingInTheMetricLowersTheWeightedError() throws {
        // 4 pairs per key over the standard basis: plain MP keeps the 4 largest |k_i|, MP in
        // the scaled space the 4 largest w_i k_i², which is the best choice for the weighted
        // error; so the weighted error is smaller than with plain squared error, and the
        // plain error larger.
        let metric = try Self.metric(seed: 9)
        let atoms = try F.basis(F.d)
        let k = F.rows(64, seed: 11), v = F.rows(64, seed: 12)
        func errors(_ m: CSRKeyMetric?) throws -> (weighted: Double, plain: Double) {
            let c = try Self.codec(metric: m, { $0.keySparsity = 4; $0.guardFraction = 0; $0.onlineAtoms = 0 }, keys: atoms)
                .makeCache(geometry: F.geometry, rope: F.rope)
            let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope, rotateOnRead: true)
            var weighted = 0.0, plain = 0.0
            for x in [c, dense] as [any KVCache] {
                try F.fill(x, k, v, batch: 64)
                try F.fill(x, F.rows(1, seed: 13), F.rows(1, seed: 14), batch: 1)
            }
            for h in 0..<2 {
                // Rotated keys at the same positions: the rotation keeps each pair's error norm.
                let ck = F.read(c, layer: 0, head: h).0, dk = F.read(dense, layer: 0, head: h).0
                let w = metric.pairWeights[h * F.d / 2..<(h + 1) * F.d / 2]
                for t in 0..<64 {
                    let e = (0..<F.d).map { ck[t * F.d + $0] - dk[t * F.d + $0] }
                    weighted += CSRKeyMetric.weightedError(e, pairWeights: w)
                    plain += e.reduce(0.0) { $0 + Double($1 * $1) }
                }
            }
            return (weighted, plain)
        }
        let withMetric = try errors(metric), without = try errors(nil)
        #expect(withMetric.weighted < 0.7 * without.weighted, "weighted error \(withMetric.weighted) in the metric, \(without.weighted) in l2")
        #expect(withMetric.plain > without.plain)
    }

    @Test func dictionaryFileKeepsTheMetric() throws {
        let metric = try Self.metric()
        let plain = try F.dictionary(keys: SparseDictionary(randomAtomCount: 32, dimension: F.d, seed: 15),
                                     values: SparseDictionary(randomAtomCount: 16, dimension: F.d / 2, seed: 16))
        let d = try CSRDictionary(model: F.model, keys: plain.keys, values: plain.values, training: plain.training, keyMetric: metric)
        #expect(d.contentHash != plain.contentHash)
        #expect(d.fileVersion == 3 && plain.fileVersion == 1)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dict-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try d.write(to: path)
        let e = try CSRDictionary.load(path: path)
        #expect(e.keyMetric == metric && e.contentHash == d.contentHash && e.entropyTables == nil)
        #expect(try GGUFFile(path: path).int("csr.version") == 3)
        // With entropy tables as well: still format 3, both kept.
        let tables = try CSREntropyTables(keyCounts: [[Int](repeating: 1, count: 33)], valueCounts: [[Int](repeating: 2, count: 17)],
                                          source: "test")
        try d.withEntropyTables(tables).write(to: path)
        let t = try CSRDictionary.load(path: path)
        #expect(t.keyMetric == metric && t.entropyTables == tables && t.contentHash == d.contentHash)
        // A metric of another shape is refused; so is a file whose weights were changed.
        let wrong = try CSRKeyMetric(layerCount: 1, kvHeads: 2, headDim: F.d, pairWeights: [Float](repeating: 1, count: F.d), source: "")
        #expect(throws: CSRError.self) { try CSRDictionary(model: F.model, keys: plain.keys, values: plain.values, keyMetric: wrong) }
        var w = metric.pairWeights
        w[3] *= 2
        let tampered = try CSRKeyMetric(layerCount: 2, kvHeads: 2, headDim: F.d, pairWeights: w, source: "test")
        // The tampered weights under the original hash: the recorded hash no longer matches.
        let forged = try CSRDictionary(model: F.model, keys: plain.keys, values: plain.values, keyMetric: tampered)
        var bytes = [UInt8](try forged.ggufData())
        let from = Array(forged.contentHash.utf8), to = Array(d.contentHash.utf8)
        guard let at = (0...bytes.count - from.count).first(where: { Array(bytes[$0..<$0 + from.count]) == from }) else {
            Issue.record("no content hash in the file")
            return
        }
        bytes.replaceSubrange(at..<at + from.count, with: to)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try CSRDictionary.load(path: path)
            Issue.record("a dictionary whose metric changed was accepted")
        } catch let e as CSRError {
            guard case .corruptDictionary = e else { Issue.record("expected corruptDictionary, got \(e)"); return }
        }
    }
}
