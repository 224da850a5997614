import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Append payloads: the KV of a few new tokens, as replication-style streaming sends it.
@Suite struct AppendPayloadTests {
    typealias F = CSRFixture

    /// fp16 halves after the header and first position, (layer, head, keys then values).
    static func body(_ payload: [UInt8]) throws -> (first: Int, halves: [UInt16]) {
        try payload.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            _ = try KVPayloadHeader.read(from: &r)
            let first = Int(try r.read(UInt32.self, "first"))
            return (first, try r.readArray(UInt16.self, count: r.remaining / 2, "rows"))
        }
    }

    @Test func denseRowsAreTheStoredRowsOfThoseTokens() throws {
        let cache = DenseKVCache<Float16>(geometry: F.geometry, rope: F.rope)
        try F.fill(cache, F.rows(9, seed: 1), F.rows(9, seed: 2), batch: 4)
        let payload = try cache.appendPayload(layers: 0..<2, tokens: 6..<8)
        #expect(try DenseKVCache<Float16>.checkAppendPayload(payload) == (first: 6, tokens: 2))
        let (first, halves) = try Self.body(payload)
        #expect(first == 6)
        var expected: [UInt16] = []
        for layer in 0..<2 {
            for h in 0..<2 {
                let (k, v) = cache.rows(layer: layer, kvHead: h)
                for b in [k, v] { expected += b[6 * F.d..<8 * F.d].map(\.bitPattern) }
            }
        }
        #expect(halves == expected)
        #expect(throws: KVCacheError.self) { try DenseKVCache<Float16>.checkAppendPayload(Array(payload.dropLast())) }
        #expect(throws: KVCacheError.self) { try DenseKVCache<Float16>.checkAppendPayload(payload + [0, 0]) }
        #expect(throws: KVCacheError.self) { try cache.appendPayload(layers: 0..<2, tokens: 8..<10) }
    }

    /// KIVI needs a head dim that is a multiple of its 32-channel groups.
    static let kiviGeometry = KVCacheGeometry(layers: 0..<2, kvHeads: 2, headDim: 32, capacity: 256)
    static let kiviRope = RoPE(headDim: 32, ropeDimension: 32, base: 10000)

    @Test func kiviSendsTheNewTokensFromItsFp16Window() throws {
        let g = Self.kiviGeometry, d = g.headDim
        let cache = KIVICache(geometry: g, rope: Self.kiviRope, bits: 2, window: 8)
        try ReplicaTests.fill(cache, ReplicaTests.rows(70, g, seed: 3), ReplicaTests.rows(70, g, seed: 4), batch: 1)
        let payload = try cache.appendPayload(layers: 1..<2, tokens: 69..<70)
        #expect(try KIVICache.checkAppendPayload(payload, bits: 2) == (first: 69, tokens: 1))
        #expect(throws: KVCacheError.self) { try KIVICache.checkAppendPayload(payload, bits: 4) }
        var expected: [UInt16] = []
        for h in 0..<2 {
            let slot = cache.slots[g.kvHeads + h]
            let (k, v) = ReplicaTests.read(cache, layer: 1, head: h)
            // Window (u32), then per head: the quantized group count (two u16 halves), keys, values.
            expected += [UInt16(slot.groups), 0]
            for x in [k, v] { expected += x[69 * d..<70 * d].map { Float16($0).bitPattern } }
        }
        let (first, halves) = try Self.body(payload)
        #expect(first == 69)
        #expect(Array(halves.dropFirst(2)) == expected, "the window's fp16 rows, as attention reads them")
        #expect(halves.first == 8, "the window")
        #expect(throws: KVCacheError.self) { try cache.appendPayload(layers: 1..<2, tokens: 0..<1) }  // quantized already
    }

    @Test func csrCodesOfNewTokensCheckAndDamageIsRefused() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 5) { $0.onlineAtoms = 4; $0.guardFraction = 0.2; $0.guardError = 0.1; $0.coefficients = .int8; $0.keySparsity = 3 }
        let cache = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(cache, F.rows(20, seed: 6), F.rows(20, seed: 7), batch: 20)
        try F.fill(cache, F.rows(3, seed: 8), F.rows(3, seed: 9), batch: 1)
        let one = try cache.appendPayload(layers: 0..<2, tokens: 22..<23)
        #expect(try CSRCache.checkAppendPayload(one, codec: codec) == (first: 22, tokens: 1))
        let three = try cache.appendPayload(layers: 0..<2, tokens: 20..<23)
        #expect(try CSRCache.checkAppendPayload(three, codec: codec) == (first: 20, tokens: 3))
        #expect(three.count > one.count)
        // Far smaller than the same tokens in fp16.
        let dense = try cache.denseAppendPayload(layers: 0..<2, tokens: 20..<23, as: Float16.self)
        #expect(three.count < dense.count)
        for cut in stride(from: 0, to: three.count, by: 5) {
            #expect(throws: (any Error).self) { try CSRCache.checkAppendPayload(Array(three[0..<cut]), codec: codec) }
        }
        #expect(throws: KVCacheError.self) { try CSRCache.checkAppendPayload(three + [0], codec: codec) }
        #expect(throws: CSRError.self) { try CSRCache.checkAppendPayload(three, codec: try F.randomCodec(atoms: 40, seed: 77) { $0.onlineAtoms = 4; $0.guardFraction = 0.2; $0.guardError = 0.1; $0.coefficients = .int8; $0.keySparsity = 3 }) }
    }

    @Test func kiviTransferQuantizesWhatTheNextAppendWould() throws {
        let g = Self.kiviGeometry, rows = { (n: Int, seed: UInt64) in ReplicaTests.rows(n, g, seed: seed) }
        let a = KIVICache(geometry: g, rope: Self.kiviRope, bits: 2, window: 8)
        try ReplicaTests.fill(a, rows(60, 10), rows(60, 11), batch: 60)  // one chunk: all fp16 until the next append
        let before = a.byteCount
        let payload = try a.serialize(layers: 0..<2)
        #expect(a.byteCount < before && payload.count < before, "the window went back to its bound before the bytes were written")
        try ReplicaTests.fill(a, rows(2, 12), rows(2, 13), batch: 2)
        let fresh = KIVICache(geometry: g, rope: Self.kiviRope, bits: 2, window: 8)
        try ReplicaTests.fill(fresh, rows(60, 10), rows(60, 11), batch: 60)
        try ReplicaTests.fill(fresh, rows(2, 12), rows(2, 13), batch: 2)
        for layer in 0..<2 {
            for h in 0..<2 {
                let (fk, fv) = ReplicaTests.read(fresh, layer: layer, head: h)
                let (k, v) = ReplicaTests.read(a, layer: layer, head: h)
                #expect(k == fk && v == fv, "the serialized cache goes on exactly as one that never moved")
            }
        }
    }
}
