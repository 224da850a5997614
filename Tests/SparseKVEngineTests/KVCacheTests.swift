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

    /// With keepRows the collector holds a fixed number of rows: each is a row of the full
    /// collection, the same (token, KV head) in every layer and in keys and values.
    @Test func streamingKeepsAlignedRowsOfTheFullCollection() throws {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let c = model.config, d = c.headDim
        let tokens: [Int32] = (0..<48).map { Int32(($0 * 53 + 7) % 100) }
        let full = try KVSampleCollector.collect(model: model, tokens: tokens, window: 8)
        let sample = try KVSampleCollector.collect(model: model, tokens: tokens, window: 8, keepRows: 10, seed: 4)
        #expect(full.rowCount == 48 * c.kvHeadCount && sample.rowCount == 10)
        #expect(sample.queryEnergy == full.queryEnergy)
        func row(_ m: [Float], _ r: Int) -> ArraySlice<Float> { m[r * d..<(r + 1) * d] }
        var sources: Set<Int> = []
        for slot in 0..<10 {
            // The full row this slot came from: the one whose layer-0 key matches.
            let r = try #require((0..<full.rowCount).first { row(full.keys[0], $0) == row(sample.keys[0], slot) })
            sources.insert(r)
            for layer in 0..<c.layerCount {
                #expect(row(sample.keys[layer], slot) == row(full.keys[layer], r))
                #expect(row(sample.values[layer], slot) == row(full.values[layer], r))
            }
        }
        #expect(sources.count == 10)
        // Enough room: the stream is kept whole, in order.
        let all = try KVSampleCollector.collect(model: model, tokens: tokens, window: 8, keepRows: 1_000)
        #expect(all.keys == full.keys && all.values == full.values)
    }
}

@Suite struct CalibrationPlanTests {
    @Test func everyFileGetsAnEqualShareUpToWhatItHolds() {
        #expect(CalibrationPlan.windowCounts(available: [100], wanted: 32) == [32])
        #expect(CalibrationPlan.windowCounts(available: [10], wanted: 32) == [10])
        #expect(CalibrationPlan.windowCounts(available: [100, 100, 100], wanted: 30) == [10, 10, 10])
        // The short file gives all it has; the others share the rest.
        #expect(CalibrationPlan.windowCounts(available: [3, 100, 100], wanted: 30) == [3, 14, 13])
        #expect(CalibrationPlan.windowCounts(available: [3, 5, 100], wanted: 30) == [3, 5, 22])
        #expect(CalibrationPlan.windowCounts(available: [3, 5, 0], wanted: 30) == [3, 5, 0])
        #expect(CalibrationPlan.windowCounts(available: [4, 4], wanted: 0) == [0, 0])
    }

    @Test func windowsAreSpreadOverEachFileAndNeverStraddleTwo() {
        let a: [Int32] = Array(0..<40), b: [Int32] = Array(100..<120)
        // 4-token windows: a holds 10, b holds 5; 6 wanted -> 3 each, evenly spaced.
        let windows = CalibrationPlan.windows(files: [a, b], window: 4, maxTokens: 24)
        #expect(windows == [[0, 1, 2, 3], [12, 13, 14, 15], [24, 25, 26, 27], [100, 101, 102, 103], [104, 105, 106, 107],
                            [112, 113, 114, 115]])
        // One file: the old plan, min(available, wanted) windows spread evenly.
        #expect(CalibrationPlan.windows(files: [a], window: 4, maxTokens: 8) == [[0, 1, 2, 3], [20, 21, 22, 23]])
        #expect(CalibrationPlan.windows(files: [[1, 2]], window: 4, maxTokens: 8).isEmpty)
    }
}
