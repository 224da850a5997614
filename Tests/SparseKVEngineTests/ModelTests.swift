import Foundation
import Testing
@testable import SparseKVEngine

/// Straightforward loops, written independently of LlamaModel, over the dequantized
/// weights: the reference the optimized forward pass must match.
private struct NaiveLlama {
    let c: LlamaConfig
    let g: GGUFFile

    func w(_ name: String) throws -> [Float] { try g.floats(name) }

    func matvec(_ m: [Float], rows: Int, cols: Int, _ x: [Float]) -> [Float] {
        (0..<rows).map { r in (0..<cols).reduce(Float(0)) { $0 + m[r * cols + $1] * x[$1] } }
    }

    func rms(_ x: [Float], _ wt: [Float]) -> [Float] {
        let ms = x.reduce(0) { $0 + $1 * $1 } / Float(x.count)
        let s = 1 / (ms + c.rmsEpsilon).squareRoot()
        return zip(x, wt).map { $0 * s * $1 }
    }

    func rope(_ v: inout [Float], head: Int, pos: Int) {
        let d = c.headDim
        for i in 0..<d / 2 {
            let theta = Double(pos) * pow(Double(c.ropeFreqBase), -2 * Double(i) / Double(d))
            let a = v[head * d + 2 * i], b = v[head * d + 2 * i + 1]
            v[head * d + 2 * i] = a * Float(cos(theta)) - b * Float(sin(theta))
            v[head * d + 2 * i + 1] = a * Float(sin(theta)) + b * Float(cos(theta))
        }
    }

    /// Logits of the last token after running all of `tokens`.
    func logits(_ tokens: [Int32]) throws -> [Float] {
        let d = c.embeddingLength, hd = c.headDim
        let emb = try w("token_embd.weight")
        var xs = tokens.map { Array(emb[Int($0) * d..<(Int($0) + 1) * d]) }
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            let (wq, wk, wv, wo) = (try w(p + "attn_q.weight"), try w(p + "attn_k.weight"), try w(p + "attn_v.weight"), try w(p + "attn_output.weight"))
            var ks: [[Float]] = [], vs: [[Float]] = [], outs: [[Float]] = []
            for (t, x) in xs.enumerated() {
                let h = rms(x, try w(p + "attn_norm.weight"))
                var q = matvec(wq, rows: d, cols: d, h), k = matvec(wk, rows: c.kvDim, cols: d, h)
                for head in 0..<c.headCount { rope(&q, head: head, pos: t) }
                for head in 0..<c.kvHeadCount { rope(&k, head: head, pos: t) }
                ks.append(k)
                vs.append(matvec(wv, rows: c.kvDim, cols: d, h))
                var att = [Float](repeating: 0, count: d)
                for head in 0..<c.headCount {
                    let g = head / c.groupSize
                    var s = (0...t).map { j in
                        (0..<hd).reduce(Float(0)) { $0 + q[head * hd + $1] * ks[j][g * hd + $1] } / Float(hd).squareRoot()
                    }
                    let m = s.max()!
                    s = s.map { exp($0 - m) }
                    let z = s.reduce(0, +)
                    for j in 0...t { for i in 0..<hd { att[head * hd + i] += s[j] / z * vs[j][g * hd + i] } }
                }
                outs.append(zip(x, matvec(wo, rows: d, cols: d, att)).map { $0 + $1 })
            }
            let (wg, wu, wd) = (try w(p + "ffn_gate.weight"), try w(p + "ffn_up.weight"), try w(p + "ffn_down.weight"))
            let f = c.feedForwardLength
            xs = try outs.map { x in
                let h = rms(x, try w(p + "ffn_norm.weight"))
                let gate = matvec(wg, rows: f, cols: d, h), up = matvec(wu, rows: f, cols: d, h)
                let act = zip(gate, up).map { $0 / (1 + exp(-$0)) * $1 }
                return zip(x, matvec(wd, rows: d, cols: f, act)).map { $0 + $1 }
            }
        }
        let h = rms(xs.last!, try w("output_norm.weight"))
        let head = g.tensorInfo("output.weight") != nil ? try w("output.weight") : emb
        return matvec(head, rows: c.vocabularySize, cols: d, h)
    }
}

@Suite struct ModelTests {
    let tokens: [Int32] = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43]

    func withTiny<R>(_ body: (String) throws -> R) throws -> R {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    func lastLogits(_ model: LlamaModel, _ tokens: [Int32], cache: any KVCache) throws -> [Float] {
        var h = try model.embed(tokens)
        try model.forward(&h, count: tokens.count, cache: cache)
        return try model.logits(h, count: tokens.count, rows: tokens.count - 1..<tokens.count)
    }

    @Test func forwardMatchesNaiveReference() throws {
        try withTiny { path in
            let g = try GGUFFile(path: path)
            let model = try LlamaModel(gguf: g)
            let fast = try lastLogits(model, tokens, cache: model.makeCache(.fp32))
            let slow = try NaiveLlama(c: model.config, g: g).logits(tokens)
            #expect(maxAbsDiff(fast, slow) < 1e-3)
            #expect(Sampler.argmax(fast.withUnsafeBufferPointer { $0 }) == Sampler.argmax(slow.withUnsafeBufferPointer { $0 }))
        }
    }

    @Test func batchedPrefillEqualsTokenByToken() throws {
        try withTiny { path in
            let model = try LlamaModel(path: path)
            let batched = try lastLogits(model, tokens, cache: model.makeCache(.fp32))
            let cache = model.makeCache(.fp32)
            var last: [Float] = []
            for t in tokens { last = try lastLogits(model, [t], cache: cache) }
            #expect(cache.tokenCount == tokens.count)
            #expect(maxAbsDiff(batched, last) < 1e-4)
        }
    }

    @Test func layerRangesChainToTheFullModel() throws {
        try withTiny { path in
            let full = try LlamaModel(path: path)
            let expected = try lastLogits(full, tokens, cache: full.makeCache(.fp32))
            // Three separately loaded slices, as three workers would hold them.
            let a = try LlamaModel(path: path, layers: 0..<1, embeddings: true, head: false)
            let b = try LlamaModel(path: path, layers: 1..<2, embeddings: false, head: false)
            let c = try LlamaModel(path: path, layers: 2..<3, embeddings: false, head: true)
            #expect(!b.hasEmbeddings && !b.hasHead && b.weightBytes < full.weightBytes)
            var h = try a.embed(tokens)
            for m in [a, b, c] { try m.forward(&h, count: tokens.count, cache: m.makeCache(.fp32)) }
            let got = try c.logits(h, count: tokens.count, rows: tokens.count - 1..<tokens.count)
            #expect(got == expected)
            #expect(throws: ModelError.self) { try b.forward(&h, count: tokens.count, layers: 0..<1, cache: b.makeCache(.fp32)) }
            #expect(throws: ModelError.self) { _ = try b.embed(tokens) }
        }
    }

    @Test func quantizedWeightsLoad() throws {
        let path = try TinyModel.write(weightType: .q8_0, untied: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let g = try GGUFFile(path: path)
        let model = try LlamaModel(gguf: g)
        #expect(!model.config.tiedEmbeddings)
        let fast = try lastLogits(model, tokens, cache: model.makeCache(.fp32))
        let slow = try NaiveLlama(c: model.config, g: g).logits(tokens)
        #expect(maxAbsDiff(fast, slow) < 1e-3)
    }

    @Test func contextLimitIsAnError() throws {
        try withTiny { path in
            let model = try LlamaModel(path: path)
            let cache = model.makeCache(.fp32, capacity: 8)
            var h = try model.embed(tokens)
            #expect(throws: ModelError.contextFull(needed: tokens.count, contextLength: 8)) {
                try model.forward(&h, count: tokens.count, cache: cache)
            }
            #expect(throws: ModelError.self) { _ = try model.embed([100]) }
        }
    }

    @Test(.enabled(if: RealAssets.available, "needs the SmolLM2 model (scripts/setup.sh)"))
    func realModelLayerSlicesMatchFullModel() throws {
        let g = try GGUFFile(path: RealAssets.model)
        let full = try LlamaModel(gguf: g)
        let prompt: [Int32] = [504, 3458, 282, 4649, 314, 216, 4086, 30, 1, 2, 31, 1024, 28, 29, 30]
        let expected = try lastLogits(full, prompt, cache: full.makeCache(.fp32))
        let slices = try [0..<10, 10..<20, 20..<30].map {
            try LlamaModel(gguf: g, layers: $0, embeddings: $0.lowerBound == 0, head: $0.upperBound == 30)
        }
        var h = try slices[0].embed(prompt)
        for m in slices { try m.forward(&h, count: prompt.count, cache: m.makeCache(.fp32)) }
        let got = try slices[2].logits(h, count: prompt.count, rows: prompt.count - 1..<prompt.count)
        #expect(got == expected)
        #expect(slices[1].weightBytes * 2 < full.weightBytes)
    }

    /// A long batch's feed-forward runs in slices of rows; any slicing gives the same hidden
    /// states up to the roundings of BLAS's blocking (bit for bit with OpenBLAS's SkylakeX
    /// kernels, not with its Zen kernels).
    @Test(.enabled(if: RealAssets.available, "needs the SmolLM2 model (scripts/setup.sh)"))
    func feedForwardSlicesGiveTheSameHiddenStates() throws {
        let g = try GGUFFile(path: RealAssets.model)
        let model = try LlamaModel(gguf: g, layers: 0..<4, embeddings: true, head: false)
        let text = try String(contentsOfFile: RealAssets.text("cfi-ch4.txt"), encoding: .utf8)
        let tokens = Array(try BPETokenizer(gguf: g).encode(String(text.prefix(6000))).prefix(700))
        #expect(tokens.count == 700)
        var reference: [Float]?
        for slice in [700, 512, 97] {
            var h = try model.embed(tokens)
            try model.forward(&h, count: tokens.count, layers: nil, cache: model.makeCache(.fp32), profile: nil, ffnSlice: slice)
            // OpenBLAS may block a 97-row product differently from a 700-row one (it does
            // on AMD Zen kernels), which changes roundings, so this compares within a
            // tolerance (and never hands two 400k-float arrays to the test's diff).
            if let reference {
                let scale = reference.map(abs).max() ?? 0
                let worst = zip(h, reference).map { abs($0 - $1) }.max() ?? .infinity
                #expect(h.count == reference.count && worst <= 1e-4 * scale,
                        "ffn slices of \(slice) rows: max |difference| \(worst), max |value| \(scale)")
            } else {
                reference = h
            }
        }
    }
}
