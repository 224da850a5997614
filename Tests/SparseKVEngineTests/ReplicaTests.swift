import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// A replica built from a full transfer plus one append payload per decoded token holds
/// what the original holds, byte for byte, and attends exactly as the original.
@Suite struct ReplicaTests {
    typealias F = CSRFixture

    static func csrCodec() throws -> CSRCodec {
        try F.randomCodec(atoms: 40, seed: 21) {
            $0.onlineAtoms = 4; $0.guardFraction = 0.2; $0.guardError = 0.1; $0.coefficients = .int8; $0.keySparsity = 3
        }
    }

    /// Prompt of `prompt` tokens in one chunk, a replica from its transfer, then `steps`
    /// decoded tokens applied as append payloads; then both take one more token and attend.
    static func checkReplica(_ original: any KVCache, deserialize: ([UInt8]) throws -> any KVCache, prompt: Int = 20,
                             steps: Int = 12) throws {
        let k = F.rows(prompt + steps + 1, seed: 31), v = F.rows(prompt + steps + 1, seed: 32), w = F.geometry.rowWidth
        try F.fill(original, Array(k[0..<prompt * w]), Array(v[0..<prompt * w]), batch: prompt)
        let replica = try deserialize(try original.serialize(layers: 0..<2))
        #expect(replica.acceptsAppendPayloads)
        for t in prompt..<prompt + steps {
            try F.fill(original, Array(k[t * w..<(t + 1) * w]), Array(v[t * w..<(t + 1) * w]), batch: 1)
            let payload = try original.appendPayload(layers: 0..<2, tokens: t..<t + 1)
            #expect(try replica.applyAppendPayload(payload) == (first: t, tokens: 1))
            #expect(replica.tokenCount == t + 1)
            #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2), "token \(t)")
            #expect(replica.byteCount == original.byteCount)
            // The same payload again is out of order and changes nothing.
            #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(payload) }
        }
        let last = prompt + steps
        for c in [original, replica] { try F.fill(c, Array(k[last * w..<(last + 1) * w]), Array(v[last * w..<(last + 1) * w]), batch: 1) }
        let heads = 4, queries = F.rows(1, seed: 33) + F.rows(1, seed: 34)  // (1, 4 * 16)
        for layer in 0..<2 {
            var a = [Float](repeating: 0, count: heads * F.d), b = a
            try queries.withUnsafeBufferPointer { q in
                try original.attend(layer: layer, queries: q.baseAddress!, count: 1, heads: heads, scale: 0.25, into: &a)
                try replica.attend(layer: layer, queries: q.baseAddress!, count: 1, heads: heads, scale: 0.25, into: &b)
            }
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "layer \(layer): attention of the next token")
        }
        #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2))
    }

    @Test func csrReplicaKeepsCodesGuardsAndOnlineAtoms() throws {
        let codec = try Self.csrCodec()
        let original = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try Self.checkReplica(original) { try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec) }
        #expect(original.onlineAndGuardByteCount > 0, "the fixture exercises online atoms and guard entries")
    }

    @Test func csrFloat16CoefficientsReplica() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 22) { $0.onlineAtoms = 2; $0.guardFraction = 0.1; $0.guardError = 0.05 }
        try Self.checkReplica(codec.makeCache(geometry: F.geometry, rope: F.rope)) {
            try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec)
        }
    }

    @Test func denseReplicas() throws {
        try Self.checkReplica(DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)) {
            try DenseKVCache<Float>.deserialize($0, capacity: F.geometry.capacity, rope: F.rope)
        }
        try Self.checkReplica(DenseKVCache<Float16>(geometry: F.geometry, rope: F.rope)) {
            try DenseKVCache<Float16>.deserialize($0, capacity: F.geometry.capacity, rope: F.rope)
        }
    }

    @Test func damagedOrForeignPayloadsChangeNothing() throws {
        let codec = try Self.csrCodec()
        let original = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(original, F.rows(20, seed: 41), F.rows(20, seed: 42), batch: 20)
        let replica = try CSRCache.deserialize(try original.serialize(layers: 0..<2), capacity: F.geometry.capacity, rope: F.rope, codec: codec)
        try F.fill(original, F.rows(1, seed: 43), F.rows(1, seed: 44), batch: 1)
        let payload = try original.appendPayload(layers: 0..<2, tokens: 20..<21)
        let before = try replica.serialize(layers: 0..<2)
        for cut in stride(from: 0, to: payload.count, by: 7) {
            #expect(throws: (any Error).self) { try replica.applyAppendPayload(Array(payload[0..<cut])) }
        }
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(payload + [0]) }
        let other = try F.randomCodec(atoms: 40, seed: 99) {
            $0.onlineAtoms = 4; $0.guardFraction = 0.2; $0.guardError = 0.1; $0.coefficients = .int8; $0.keySparsity = 3
        }
        let foreign = other.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(foreign, F.rows(21, seed: 45), F.rows(21, seed: 46), batch: 21)
        #expect(throws: CSRError.self) { try replica.applyAppendPayload(try foreign.appendPayload(layers: 0..<2, tokens: 20..<21)) }
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        try F.fill(dense, F.rows(21, seed: 47), F.rows(21, seed: 48), batch: 21)
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(try dense.appendPayload(layers: 0..<2, tokens: 20..<21)) }
        #expect(try replica.serialize(layers: 0..<2) == before, "a refused payload leaves the replica as it was")
        try replica.applyAppendPayload(payload)
        #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2))
        let kivi = KIVICache(geometry: F.geometry, rope: F.rope, bits: 2, window: 8)
        #expect(!kivi.acceptsAppendPayloads)
        #expect(throws: KVCacheError.self) { try kivi.applyAppendPayload(payload) }
    }
}
