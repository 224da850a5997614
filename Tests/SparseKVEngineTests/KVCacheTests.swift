import Foundation
import Testing
@testable import SparseKVEngine

/// Every cache type must pass the same assertions (mlx-swift-lm style).
@Suite struct KVCacheTests {
    static let geometry = KVCacheGeometry(layers: 2..<5, kvHeads: 2, headDim: 8, capacity: 32)
    static let rope = RoPE(headDim: 8, ropeDimension: 8, base: 10000)

    static func makers() -> [(String, () -> any KVCache)] {
        [
            ("fp32", { DenseKVCache<Float>(geometry: geometry, rope: rope) }),
            ("fp16", { DenseKVCache<Float16>(geometry: geometry, rope: rope) }),
            ("fp32-preRoPE", { DenseKVCache<Float>(geometry: geometry, rope: rope, rotateOnRead: true) }),
            ("fp16-preRoPE", { DenseKVCache<Float16>(geometry: geometry, rope: rope, rotateOnRead: true) }),
        ]
    }

    /// (n, kvHeads * headDim) random rows
    static func rows(_ n: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0..<n * geometry.rowWidth).map { _ in Float.random(in: -2...2, using: &g) }
    }

    func read(_ c: any KVCache, layer: Int, head: Int) -> ([Float], [Float]) {
        c.withKeysAndValues(layer: layer, kvHead: head) { k, v, n in
            (Array(UnsafeBufferPointer(start: k, count: n * 8)), Array(UnsafeBufferPointer(start: v, count: n * 8)))
        }
    }

    @Test func appendReadTruncateAndCount() throws {
        let k = Self.rows(5, seed: 1), v = Self.rows(5, seed: 2)
        // Expected keys: head 1 of each row, rotated at its position.
        var expectedK: [Float] = []
        for t in 0..<5 {
            var row = Array(k[t * 16 + 8..<t * 16 + 16])
            row.withUnsafeMutableBufferPointer { Self.rope.apply($0.baseAddress!, heads: 1, position: t) }
            expectedK += row
        }
        let expectedV = (0..<5).flatMap { Array(v[$0 * 16 + 8..<$0 * 16 + 16]) }
        for (name, make) in Self.makers() {
            let c = make()
            let tol: Float = name.hasPrefix("fp16") ? 4e-3 : 1e-5
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    try c.append(layer: 3, keys: kp.baseAddress!, values: vp.baseAddress!, count: 3)
                    try c.append(layer: 3, keys: kp.baseAddress! + 48, values: vp.baseAddress! + 48, count: 2)
                    #expect(throws: KVCacheError.self) { try c.append(layer: 5, keys: kp.baseAddress!, values: vp.baseAddress!, count: 1) }
                }
            }
            #expect(c.count(layer: 3) == 5 && c.count(layer: 2) == 0, "\(name)")
            let (rk, rv) = read(c, layer: 3, head: 1)
            #expect(maxAbsDiff(rk, expectedK) < tol, "\(name)")
            #expect(maxAbsDiff(rv, expectedV) < tol, "\(name)")
            let elem = name.hasPrefix("fp16") ? 2 : 4
            #expect(c.byteCount(layer: 3) == 5 * 16 * 2 * elem, "\(name)")
            #expect(c.byteCount == 5 * 16 * 2 * elem, "\(name)")
            c.truncate(to: 2)
            #expect(c.count(layer: 3) == 2, "\(name)")
            let (tk, _) = read(c, layer: 3, head: 1)
            #expect(maxAbsDiff(tk, Array(expectedK[0..<16])) < tol, "\(name)")
        }
    }

    @Test func capacityIsEnforced() throws {
        for (name, make) in Self.makers() {
            let c = make()
            let k = Self.rows(33, seed: 3)
            try k.withUnsafeBufferPointer { p in
                #expect(throws: KVCacheError.full(layer: 2, capacity: 32, needed: 33), "\(name)") {
                    try c.append(layer: 2, keys: p.baseAddress!, values: p.baseAddress!, count: 33)
                }
            }
        }
    }

    @Test func serializationRoundTrips() throws {
        let k = Self.rows(4, seed: 4), v = Self.rows(4, seed: 5)
        for (name, make) in Self.makers() {
            let c = make()
            for layer in 2..<5 {
                try k.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in try c.append(layer: layer, keys: kp.baseAddress!, values: vp.baseAddress!, count: 4) }
                }
            }
            let bytes = try c.serialize(layers: 3..<5)
            let restored: any KVCache = name.hasPrefix("fp16")
                ? try DenseKVCache<Float16>.deserialize(bytes, capacity: 32, rope: Self.rope)
                : try DenseKVCache<Float>.deserialize(bytes, capacity: 32, rope: Self.rope)
            #expect(restored.geometry.layers == 3..<5, "\(name)")
            #expect(restored.kind == c.kind)
            for layer in 3..<5 {
                for head in 0..<2 {
                    let (a, b) = (read(c, layer: layer, head: head), read(restored, layer: layer, head: head))
                    #expect(a.0 == b.0 && a.1 == b.1, "\(name)")
                }
            }
            // Payload bytes are the cache bytes plus a small header.
            #expect(bytes.count - (c.byteCount(layer: 3) + c.byteCount(layer: 4)) < 64)
            // Damaged payloads are errors, never crashes.
            #expect(throws: KVCacheError.self) { _ = try DenseKVCache<Float>.deserialize(Array(bytes.dropLast(3)), capacity: 32, rope: Self.rope) }
            #expect(throws: KVCacheError.self) { _ = try DenseKVCache<Float>.deserialize(Array(bytes.prefix(10)), capacity: 32, rope: Self.rope) }
            #expect(throws: KVCacheError.self) { _ = try DenseKVCache<Float>.deserialize([0, 1, 2, 3] + bytes, capacity: 32, rope: Self.rope) }
            #expect(throws: KVCacheError.self) { _ = try DenseKVCache<Float>.deserialize(bytes, capacity: 2, rope: Self.rope) }
        }
        // fp16 payload into an fp32 cache is refused.
        let c = DenseKVCache<Float16>(geometry: Self.geometry, rope: Self.rope)
        #expect(throws: KVCacheError.self) { _ = try DenseKVCache<Float>.deserialize(try c.serialize(layers: 2..<3), capacity: 32, rope: Self.rope) }
    }

    @Test func modelGivesSameTokensWithEveryDenseCache() throws {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let prompt: [Int32] = [5, 17, 42, 8, 99, 23]
        func greedy(_ cache: any KVCache) throws -> ([Int32], [Float]) {
            let gen = TextGenerator(model: model)
            var logits = try gen.prefill(prompt, cache: cache)
            var out: [Int32] = []
            for _ in 0..<10 {
                out.append(Int32(logits.withUnsafeBufferPointer { Sampler.argmax($0) }))
                logits = try gen.step(out.last!, cache: cache)
            }
            return (out, logits)
        }
        let (ref, refLogits) = try greedy(model.makeCache(.fp32))
        let (pre, preLogits) = try greedy(DenseKVCache<Float>(geometry: model.cacheGeometry(), rope: model.rope, rotateOnRead: true))
        #expect(pre == ref)
        #expect(maxAbsDiff(preLogits, refLogits) < 1e-4)
        let (half, _) = try greedy(model.makeCache(.fp16))
        #expect(half == ref)

        // A session moved mid-way through serialization continues identically.
        let gen = TextGenerator(model: model)
        let cache = model.makeCache(.fp32)
        _ = try gen.prefill(prompt, cache: cache)
        let moved = try DenseKVCache<Float>.deserialize(try cache.serialize(layers: 0..<3), capacity: 256, rope: model.rope)
        #expect(try gen.step(ref[0], cache: moved) == gen.step(ref[0], cache: cache))
    }
}

@Suite struct KVSampleCollectorTests {
    @Test func collectsPreRoPEKeysAndValuesOfEveryLayer() throws {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let tokens: [Int32] = (0..<20).map { Int32(($0 * 37) % 100) }
        let samples = try KVSampleCollector.collect(model: model, tokens: tokens, window: 8)
        let c = model.config
        #expect(samples.rowCount == 2 * 8 * c.kvHeadCount)  // 2 whole windows; the last 4 tokens are dropped
        #expect(samples.keys.count == c.layerCount)

        // Reference: the second window through a rotate-on-write cache. Collected keys,
        // rotated at their positions, must equal what that cache holds.
        let cache = model.makeCache(.fp32, capacity: 8)
        _ = try TextGenerator(model: model).prefill(Array(tokens[8..<16]), cache: cache)
        for layer in 0..<c.layerCount {
            for h in 0..<c.kvHeadCount {
                let (k, v) = cache.withKeysAndValues(layer: layer, kvHead: h) { k, v, n in
                    (Array(UnsafeBufferPointer(start: k, count: n * c.headDim)), Array(UnsafeBufferPointer(start: v, count: n * c.headDim)))
                }
                for t in 0..<8 {
                    let row = (8 + t) * c.kvHeadCount + h
                    var key = Array(samples.keys[layer][row * c.headDim..<(row + 1) * c.headDim])
                    key.withUnsafeMutableBufferPointer { model.rope.apply($0.baseAddress!, heads: 1, position: t) }
                    #expect(maxAbsDiff(key, Array(k[t * c.headDim..<(t + 1) * c.headDim])) < 1e-5)
                    let value = Array(samples.values[layer][row * c.headDim..<(row + 1) * c.headDim])
                    #expect(value == Array(v[t * c.headDim..<(t + 1) * c.headDim]))
                }
            }
        }
        // Chunk view: same buffer, shorter rows.
        let split = try #require(samples.vectors(layer: 1, keys: false, chunks: 2))
        #expect(split.dimension == c.headDim / 2 && split.data == samples.values[1])
        #expect(samples.vectors(layer: 1, keys: true, chunks: 3) == nil)
        #expect(throws: PerplexityError.self) { _ = try KVSampleCollector.collect(model: model, tokens: [1, 2], window: 8) }
    }
}
