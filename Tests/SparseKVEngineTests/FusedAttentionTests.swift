import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Every cache's fused attention (its own format read in blocks, threads over heads and
/// positions, CSR values in atom space) against the same cache's attention on a layer
/// materialized in fp32 (`referenceAttend`), on random data.
@Suite(.serialized) struct FusedAttentionTests {
    static let d = 64
    static let rope = RoPE(headDim: d, ropeDimension: d, base: 10000)

    /// A CSR codec over random dictionaries for `kvHeads` heads of 64: keys whole (or in
    /// `keyChunks` chunks), values in 2 chunks of 32, with online atoms and a guard bank so
    /// every override path runs. Sparsities that are multiples of 4 take the decode loops'
    /// fast unpacking, others the general one.
    static func csrCodec(kvHeads: Int, int8: Bool, keySparsity: Int = 6, valueSparsity: Int = 3,
                         keyChunks: Int = 1) throws -> CSRCodec {
        let model = CSRDictionary.ModelInfo(architecture: "llama", name: "fused-test", fingerprint: "beef",
                                            layerCount: 2, kvHeads: kvHeads, headDim: d)
        let keys = try SparseDictionary(randomAtomCount: 256, dimension: d / keyChunks, seed: 3)
        let values = try SparseDictionary(randomAtomCount: 128, dimension: d / 2, seed: 4)
        let dict = try CSRDictionary(
            model: model, keys: .init(chunks: keyChunks, groups: [.init(layers: 0..<2, dictionary: keys)]),
            values: .init(chunks: 2, groups: [.init(layers: 0..<2, dictionary: values)]))
        var s = CSRSettings(keySparsity: keySparsity, valueSparsity: valueSparsity)
        s.coefficients = int8 ? .int8 : .float16
        s.onlineAtoms = 8
        s.guardFraction = 0.05
        s.guardError = 0.2
        return try CSRCodec(dictionary: dict, settings: s)
    }

    static func makeCache(_ kind: String, kvHeads: Int, capacity: Int) throws -> any KVCache {
        let g = KVCacheGeometry(layers: 0..<2, kvHeads: kvHeads, headDim: d, capacity: capacity)
        switch kind {
        case "fp32": return DenseKVCache<Float>(geometry: g, rope: rope)
        case "fp16": return DenseKVCache<Float16>(geometry: g, rope: rope)
        case "fp32-preRoPE": return DenseKVCache<Float>(geometry: g, rope: rope, rotateOnRead: true)
        case "fp16-preRoPE": return DenseKVCache<Float16>(geometry: g, rope: rope, rotateOnRead: true)
        case "kivi2": return KIVICache(geometry: g, rope: rope, bits: 2)
        case "kivi4": return KIVICache(geometry: g, rope: rope, bits: 4)
        case "kivi8": return KIVICache(geometry: g, rope: rope, bits: 8)
        case "csr-f16": return try csrCodec(kvHeads: kvHeads, int8: false).makeCache(geometry: g, rope: rope)
        case "csr-i8": return try csrCodec(kvHeads: kvHeads, int8: true).makeCache(geometry: g, rope: rope)
        case "csr-i8-s8":
            return try csrCodec(kvHeads: kvHeads, int8: true, keySparsity: 8, valueSparsity: 4).makeCache(geometry: g, rope: rope)
        case "csr-i8-k32":
            return try csrCodec(kvHeads: kvHeads, int8: true, keySparsity: 8, valueSparsity: 8, keyChunks: 2)
                .makeCache(geometry: g, rope: rope)
        default: throw KVCacheError.unknownKind(kind)
        }
    }

    static let kinds = ["fp32", "fp16", "fp32-preRoPE", "fp16-preRoPE", "kivi2", "kivi4", "kivi8", "csr-f16", "csr-i8", "csr-i8-s8",
                             "csr-i8-k32"]

    /// (n, width) random rows in [-2, 2]
    static func rows(_ n: Int, width: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0..<n * width).map { _ in Float.random(in: -2...2, using: &g) }
    }

    /// Fills layer 1 with `prompt` tokens in batches, then appends `n` more and compares
    /// the fused attention of those n against the reference at 1, 2 and 3 threads.
    func check(_ kind: String, kvHeads: Int, group: Int, prompt: Int, n: Int, batch: Int) throws {
        let heads = kvHeads * group, width = kvHeads * Self.d, total = prompt + n
        let c = try Self.makeCache(kind, kvHeads: kvHeads, capacity: total + 1)
        let k = Self.rows(total, width: width, seed: UInt64(total * 7 + kvHeads))
        let v = Self.rows(total, width: width, seed: UInt64(total * 11 + group))
        var t = 0
        while t < total {
            // The prompt in batches, then the n tokens whose attention is checked in one append.
            let b = t < prompt ? min(batch, prompt - t) : n
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    try c.append(layer: 1, keys: kp.baseAddress! + t * width, values: vp.baseAddress! + t * width, count: b)
                }
            }
            t += b
        }
        let q = Self.rows(n, width: heads * Self.d, seed: UInt64(n * 13 + prompt))
        var expected = [Float](repeating: 0, count: n * heads * Self.d)
        let scale = 1 / Float(Self.d).squareRoot()
        try q.withUnsafeBufferPointer { qp in
            try expected.withUnsafeMutableBufferPointer {
                try c.referenceAttend(layer: 1, queries: qp.baseAddress!, count: n, heads: heads, scale: scale, into: $0.baseAddress!)
            }
        }
        let before = ComputeThreads.count
        defer {
            ComputeThreads.set(before)
            BLASRuntime.splitOverride.store(0, ordering: .relaxed)
        }
        // Prefill splits its units over the compute threads, or (as when OpenBLAS runs on
        // more than one thread) runs them in turn: split override 1 or 2.
        let settings = n > FusedAttention.decodeTokens ? [(1, 2), (1, 1), (2, 1), (3, 1)] : [(1, 0), (2, 0), (3, 0)]
        for (threads, split) in settings {
            ComputeThreads.set(threads)
            BLASRuntime.splitOverride.store(split, ordering: .relaxed)
            var got = [Float](repeating: .nan, count: expected.count)
            try q.withUnsafeBufferPointer { qp in
                try got.withUnsafeMutableBufferPointer {
                    try c.attend(layer: 1, queries: qp.baseAddress!, count: n, heads: heads, scale: scale, into: $0.baseAddress!)
                }
            }
            let worst = zip(got, expected).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 2e-5, "\(kind) kvHeads \(kvHeads) group \(group) prompt \(prompt) n \(n) threads \(threads), split override \(split): \(worst)")
        }
    }

    @Test(arguments: FusedAttentionTests.kinds)
    func decodeMatchesReference(kind: String) throws {
        for (kvHeads, group) in [(1, 1), (3, 3), (2, 4)] {
            for prompt in [0, 40, 64, 300, 1100] {
                for n in [1, 3] where prompt + n > 0 {
                    try check(kind, kvHeads: kvHeads, group: group, prompt: prompt, n: n, batch: 100)
                }
            }
        }
    }

    @Test(arguments: FusedAttentionTests.kinds)
    func prefillMatchesReference(kind: String) throws {
        for (kvHeads, group) in [(1, 2), (3, 3)] {
            // Several key blocks (512 positions) and query blocks (256 tokens), partly visible blocks.
            for (prompt, n) in [(0, 5), (0, 300), (200, 17), (600, 700), (0, 1100), (1030, 9)] {
                try check(kind, kvHeads: kvHeads, group: group, prompt: prompt, n: n, batch: 64)
            }
        }
    }

    /// The causal mask: the first of a batch of tokens attends to itself only, so its output is its own value.
    @Test func firstTokenSeesOnlyItself() throws {
        for kind in ["fp32", "csr-i8", "kivi4"] {
            let c = try Self.makeCache(kind, kvHeads: 1, capacity: 64)
            let k = Self.rows(10, width: Self.d, seed: 1), v = Self.rows(10, width: Self.d, seed: 2)
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    try c.append(layer: 0, keys: kp.baseAddress!, values: vp.baseAddress!, count: 10)
                }
            }
            let q = Self.rows(10, width: Self.d, seed: 3)
            var out = [Float](repeating: 0, count: 10 * Self.d)
            try q.withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer {
                    try c.attend(layer: 0, queries: qp.baseAddress!, count: 10, heads: 1, scale: 0.125, into: $0.baseAddress!)
                }
            }
            // Token 0 sees only position 0: its output is value 0 itself (as the cache holds it).
            let (_, v0) = c.withKeysAndValues(layer: 0, kvHead: 0) { _, vv, _ in ((), Array(UnsafeBufferPointer(start: vv, count: Self.d))) }
            let worst = zip(out.prefix(Self.d), v0).map { abs($0 - $1) }.max() ?? 1
            #expect(worst < 1e-5, "\(kind): \(worst)")
        }
    }
}
