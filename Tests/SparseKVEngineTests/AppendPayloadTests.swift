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
        #expect(try AppendPayload.checkDense(payload) == (first: 6, tokens: 2))
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
        #expect(throws: KVCacheError.self) { try AppendPayload.checkDense(Array(payload.dropLast())) }
        #expect(throws: KVCacheError.self) { try AppendPayload.checkDense(payload + [0, 0]) }
        #expect(throws: KVCacheError.self) { try cache.appendPayload(layers: 0..<2, tokens: 8..<10) }
    }

    @Test func kiviSendsTheNewTokensFromItsFp16Window() throws {
        let cache = KIVICache(geometry: F.geometry, rope: F.rope, bits: 2, window: 8)
        try F.fill(cache, F.rows(70, seed: 3), F.rows(70, seed: 4), batch: 1)
        let payload = try cache.appendPayload(layers: 1..<2, tokens: 69..<70)
        #expect(try AppendPayload.checkDense(payload) == (first: 69, tokens: 1))
        let (_, halves) = try Self.body(payload)
        var expected: [UInt16] = []
        for h in 0..<2 {
            let (k, v) = F.read(cache, layer: 1, head: h)
            for x in [k, v] { expected += x[69 * F.d..<70 * F.d].map { Float16($0).bitPattern } }
        }
        #expect(halves == expected, "the window's fp16 rows, as attention reads them")
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
        let a = KIVICache(geometry: F.geometry, rope: F.rope, bits: 2, window: 8)
        try F.fill(a, F.rows(60, seed: 10), F.rows(60, seed: 11), batch: 60)  // one chunk: all fp16 until the next append
        let before = a.byteCount
        let payload = try a.serialize(layers: 0..<2)
        #expect(a.byteCount < before && payload.count < before, "the window went back to its bound before the bytes were written")
        try F.fill(a, F.rows(2, seed: 12), F.rows(2, seed: 13), batch: 2)
        let fresh = KIVICache(geometry: F.geometry, rope: F.rope, bits: 2, window: 8)
        try F.fill(fresh, F.rows(60, seed: 10), F.rows(60, seed: 11), batch: 60)
        try F.fill(fresh, F.rows(2, seed: 12), F.rows(2, seed: 13), batch: 2)
        for layer in 0..<2 {
            for h in 0..<2 {
                let (fk, fv) = F.read(fresh, layer: layer, head: h)
                let (k, v) = F.read(a, layer: layer, head: h)
                #expect(k == fk && v == fv, "the serialized cache goes on exactly as one that never moved")
            }
        }
    }
}
