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

    /// KIVI needs a head dim that is a multiple of its 32-channel groups.
    static let kiviGeometry = KVCacheGeometry(layers: 0..<2, kvHeads: 2, headDim: 32, capacity: 256)
    static let kiviRope = RoPE(headDim: 32, ropeDimension: 32, base: 10000)

    /// (n, kvHeads * headDim) random rows in [-2, 2] for `g`.
    static func rows(_ n: Int, _ g: KVCacheGeometry, seed: UInt64) -> [Float] {
        var r = SeededGenerator(seed: seed)
        return (0..<n * g.rowWidth).map { _ in Float.random(in: -2...2, using: &r) }
    }

    /// Appends `k`/`v` to every layer of `c` in batches of `batch` tokens.
    static func fill(_ c: any KVCache, _ k: [Float], _ v: [Float], batch: Int) throws {
        let w = c.geometry.rowWidth, n = k.count / w
        for layer in c.geometry.layers {
            for t in stride(from: 0, to: n, by: batch) {
                try c.append(layer: layer, keys: Array(k[t * w..<min(n, t + batch) * w]), values: Array(v[t * w..<min(n, t + batch) * w]),
                             count: min(batch, n - t))
            }
        }
    }

    /// One KV head of `c` as attention reads it: (count, headDim) keys and values.
    static func read(_ c: any KVCache, layer: Int, head: Int) -> ([Float], [Float]) {
        let d = c.geometry.headDim
        return c.withKeysAndValues(layer: layer, kvHead: head) { k, v, n in
            (Array(UnsafeBufferPointer(start: k, count: n * d)), Array(UnsafeBufferPointer(start: v, count: n * d)))
        }
    }

    /// Bit patterns of every layer and head of `c` as attention reads them.
    static func readAll(_ c: any KVCache) -> [UInt32] {
        c.geometry.layers.flatMap { layer in
            (0..<c.geometry.kvHeads).flatMap { h -> [UInt32] in
                let (k, v) = read(c, layer: layer, head: h)
                return (k + v).map(\.bitPattern)
            }
        }
    }

    /// Prompt of `prompt` tokens in one chunk, a replica from its transfer, then `steps`
    /// decoded tokens applied as append payloads; then both take one more token and attend.
    /// With `readsAlike` the replica also reads as the original after every token (not so
    /// for CSR, whose original reads its latest append from the exact rows it keeps).
    static func checkReplica(_ original: any KVCache, deserialize: ([UInt8]) throws -> any KVCache, prompt: Int = 20,
                             steps: Int = 12, readsAlike: Bool = false) throws {
        let g = original.geometry
        let k = rows(prompt + steps + 1, g, seed: 31), v = rows(prompt + steps + 1, g, seed: 32), w = g.rowWidth
        try fill(original, Array(k[0..<prompt * w]), Array(v[0..<prompt * w]), batch: prompt)
        let replica = try deserialize(try original.serialize(layers: 0..<2))
        #expect(replica.acceptsAppendPayloads)
        for t in prompt..<prompt + steps {
            try fill(original, Array(k[t * w..<(t + 1) * w]), Array(v[t * w..<(t + 1) * w]), batch: 1)
            let payload = try original.appendPayload(layers: 0..<2, tokens: t..<t + 1)
            #expect(try replica.applyAppendPayload(payload) == (first: t, tokens: 1))
            #expect(replica.tokenCount == t + 1)
            if readsAlike {
                let same = readAll(replica) == readAll(original)
                #expect(same, "token \(t): read as attention reads it")
            }
            #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2), "token \(t)")
            #expect(replica.byteCount == original.byteCount)
            // The same payload again is out of order and changes nothing.
            #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(payload) }
        }
        let last = prompt + steps
        for c in [original, replica] { try fill(c, Array(k[last * w..<(last + 1) * w]), Array(v[last * w..<(last + 1) * w]), batch: 1) }
        let heads = 2 * g.kvHeads, queries = rows(1, g, seed: 33) + rows(1, g, seed: 34)  // (1, heads * headDim)
        for layer in 0..<2 {
            var a = [Float](repeating: 0, count: heads * g.headDim), b = a
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

    /// With `recent=W` the buffer's fp16 rows travel with each token's codes (here with
    /// 6-bit coefficients and sink tokens too).
    @Test func csrReplicaKeepsTheRecentBuffer() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 21) {
            $0.coefficients = .int8; $0.coefficientBits = 6; $0.keySparsity = 3; $0.recentTokens = 4; $0.sinkTokens = 2
        }
        let original = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try Self.checkReplica(original) { try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec) }
    }

    /// With `recent=W` a token's codes travel when it leaves the buffer. Payloads spanning
    /// several of the original's appends, and a cut-back on both sides (a resumed session,
    /// after which the replica holds codes past where the next payload's start), leave the
    /// replica equal to the original; online atoms come from a prompt the buffer holds whole.
    @Test func csrRecentReplicaFollowsSpansAndCutBacks() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 23) {
            $0.coefficients = .int8; $0.keySparsity = 3; $0.recentTokens = 6; $0.onlineAtoms = 2; $0.sinkTokens = 1
        }
        let g = F.geometry, w = g.rowWidth
        let k = F.rows(40, seed: 71), v = F.rows(40, seed: 72)
        let original = codec.makeCache(geometry: g, rope: F.rope)
        try F.fill(original, Array(k[0..<4 * w]), Array(v[0..<4 * w]), batch: 4)  // the prompt, inside the buffer
        #expect(original.codedTokens(0) == 0 && original.keyStreams[0].onlineCount > 0 && original.valueStreams[1].onlineCount > 0)
        let replica = try CSRCache.deserialize(try original.serialize(layers: 0..<2), capacity: g.capacity, rope: F.rope, codec: codec)
        var t = 4
        func step(_ n: Int, batch: Int) throws {
            try F.fill(original, Array(k[t * w..<(t + n) * w]), Array(v[t * w..<(t + n) * w]), batch: batch)
            let payload = try original.appendPayload(layers: 0..<2, tokens: t..<t + n)
            #expect(try CSRCache.checkAppendPayload(payload, codec: codec) == (first: t, tokens: n))
            #expect(try replica.applyAppendPayload(payload) == (first: t, tokens: n))
            t += n
            #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2), "token \(t)")
            #expect(replica.byteCount == original.byteCount && original.codedTokens(1) == replica.codedTokens(1))
        }
        try step(1, batch: 1)
        try step(3, batch: 1)
        try step(5, batch: 5)
        try step(2, batch: 1)
        #expect(original.codedTokens(0) == t - 6)
        for c in [original, replica] { c.truncate(to: t - 2) }
        t -= 2
        #expect(original.codedTokens(0) == t - 4, "codes past the buffer's usual start")
        try step(1, batch: 1)
        try step(4, batch: 2)
        #expect(original.codedTokens(0) == t - 6)
        // A payload must cover the latest tokens (the buffer rows of earlier ones are gone).
        #expect(throws: KVCacheError.self) { try original.appendPayload(layers: 0..<2, tokens: t - 2..<t - 1) }
    }

    /// The stored forms that differ from memory travel in append payloads too: pair counts
    /// (`err=`), rANS- or gap-coded indices, Huffman-coded coefficients; and with a buffer,
    /// gap-coded codes of the tokens leaving it; a buffer of int8 rows.
    @Test(arguments: ["csr:k=3,v=2,coef=i8,ec=gaps,online=2,guard=0.2,guard-error=0.1", "csr:k=6,v=3,err=0.2,coef=i8",
                      "csr:k=3,v=2,coef=i6,alg=omp,ec=gaps,recent=4,sink=2", "csr:k=3,v=2,coef=i6,recent=4,buffer=i8",
                      "csr:k=3,v=2,coef=i6,alg=omp,ec=gaps+coef,recent=4,sink=2", "csr:k=6,v=3,err=0.2,coef=i7,ec=coef"])
    func csrStoredFormsReplica(spec: String) throws {
        let codec = try F.randomCodec(atoms: 40, seed: 24) { $0 = try! CSRSettings(parsing: spec, valueChunks: 2) }
        try Self.checkReplica(codec.makeCache(geometry: F.geometry, rope: F.rope)) {
            try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec)
        }
    }

    @Test func csrEntropyCodedReplica() throws {
        let codec = try CSRErrorTargetedTests.codecWithTables("csr:k=6,v=3,err=0.1,coef=i8,online=3,ec=rans")
        try Self.checkReplica(codec.makeCache(geometry: F.geometry, rope: F.rope)) {
            try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec)
        }
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
        let kivi = KIVICache(geometry: Self.kiviGeometry, rope: Self.kiviRope, bits: 2, window: 8)
        #expect(throws: KVCacheError.self) { try kivi.applyAppendPayload(payload) }
    }

    /// KIVI past its window: the replica quantizes the same groups from the same fp16 rows.
    @Test(arguments: KIVICache.supportedBits)
    func kiviReplicaKeepsGroupsAndWindow(bits: Int) throws {
        let original = KIVICache(geometry: Self.kiviGeometry, rope: Self.kiviRope, bits: bits, window: 8)
        try Self.checkReplica(original, deserialize: {
            try KVCacheFormats.format(kind: original.kind).deserialize($0, capacity: Self.kiviGeometry.capacity, rope: Self.kiviRope)
        }, prompt: 50, steps: 45, readsAlike: true)
        #expect(original.slots.allSatisfy { $0.groups >= 2 }, "the test quantized groups while the replica followed")
    }

    /// Payloads that each span several of the original's appends (which quantized in
    /// between) still leave the replica equal to the original.
    @Test func kiviReplicaFollowsPayloadsSpanningSeveralAppends() throws {
        let g = Self.kiviGeometry, w = g.rowWidth
        let original = KIVICache(geometry: g, rope: Self.kiviRope, bits: 4, window: 8)
        let k = Self.rows(90, g, seed: 51), v = Self.rows(90, g, seed: 52)
        try Self.fill(original, Array(k[0..<30 * w]), Array(v[0..<30 * w]), batch: 30)
        let replica = try KIVICache.deserialize(try original.serialize(layers: 0..<2), capacity: g.capacity, rope: Self.kiviRope)
        for t in stride(from: 30, to: 90, by: 3) {
            try Self.fill(original, Array(k[t * w..<(t + 3) * w]), Array(v[t * w..<(t + 3) * w]), batch: 1)
            #expect(try replica.applyAppendPayload(try original.appendPayload(layers: 0..<2, tokens: t..<t + 3)) == (first: t, tokens: 3))
            let same = Self.readAll(replica) == Self.readAll(original)
            #expect(same, "tokens \(t)..<\(t + 3)")
            #expect(replica.byteCount == original.byteCount)
        }
        #expect(try replica.serialize(layers: 0..<2) == original.serialize(layers: 0..<2))
    }

    @Test func kiviDamagedForeignOrOutOfOrderPayloadsChangeNothing() throws {
        let g = Self.kiviGeometry, rope = Self.kiviRope
        func filled(bits: Int, window: Int, tokens: Int) throws -> KIVICache {
            let c = KIVICache(geometry: g, rope: rope, bits: bits, window: window)
            try Self.fill(c, Self.rows(tokens, g, seed: 61), Self.rows(tokens, g, seed: 62), batch: 1)
            return c
        }
        let original = try filled(bits: 4, window: 8, tokens: 44)
        let replica = try KIVICache.deserialize(try original.serialize(layers: 0..<2), capacity: g.capacity, rope: rope)
        let more = try filled(bits: 4, window: 8, tokens: 46)  // the same rows, two tokens further
        let payload = try more.appendPayload(layers: 0..<2, tokens: 44..<45)
        let before = try replica.serialize(layers: 0..<2), beforeRead = Self.readAll(replica)
        for cut in stride(from: 0, to: payload.count, by: 7) {
            #expect(throws: (any Error).self) { try replica.applyAppendPayload(Array(payload[0..<cut])) }
        }
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(payload + [0]) }
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(try more.appendPayload(layers: 0..<2, tokens: 45..<46)) }  // skips a token
        let otherBits = try filled(bits: 2, window: 8, tokens: 45)
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(try otherBits.appendPayload(layers: 0..<2, tokens: 44..<45)) }
        let otherWindow = try filled(bits: 4, window: 16, tokens: 45)
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(try otherWindow.appendPayload(layers: 0..<2, tokens: 44..<45)) }
        let dense = DenseKVCache<Float16>(geometry: g, rope: rope)
        try Self.fill(dense, Self.rows(45, g, seed: 61), Self.rows(45, g, seed: 62), batch: 45)
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(try dense.appendPayload(layers: 0..<2, tokens: 44..<45)) }
        // A group count below what the replica has quantized already.
        var fewer = payload
        let groupsAt = 4 + 2 + (4 + 5) + 5 * 4 + 1 + 4 + 4  // header (magic, version, "kivi4", 5 u32, flag), first, window
        #expect(fewer[groupsAt] > 0)
        fewer[groupsAt] = 0
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(fewer) }
        let unchanged = try replica.serialize(layers: 0..<2) == before && Self.readAll(replica) == beforeRead
        #expect(unchanged, "refused payloads left the replica as it was")
        #expect(try replica.applyAppendPayload(payload) == (first: 44, tokens: 1))
        #expect(throws: KVCacheError.self) { try replica.applyAppendPayload(payload) }  // the same payload again
        let reference = try filled(bits: 4, window: 8, tokens: 45)
        _ = try reference.serialize(layers: 0..<2)  // settles as the original did before the replica was made
        let same = Self.readAll(replica) == Self.readAll(reference)
        #expect(same, "the replica reads as a cache that took the same tokens")
    }
}
