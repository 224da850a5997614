import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Dictionaries and data for CSR tests on a small geometry: 2 layers, 2 KV heads of 16.
enum CSRFixture {
    static let d = 16
    static let geometry = KVCacheGeometry(layers: 0..<2, kvHeads: 2, headDim: d, capacity: 256)
    static let rope = RoPE(headDim: d, ropeDimension: d, base: 10000)
    static let model = CSRDictionary.ModelInfo(architecture: "llama", name: "fixture", fingerprint: "f00d",
                                               layerCount: 2, kvHeads: 2, headDim: d)

    /// The standard basis of R^m: MP with s = m pairs codes any vector exactly.
    static func basis(_ m: Int) throws -> SparseDictionary {
        var a = [Float](repeating: 0, count: m * m)
        for i in 0..<m { a[i * m + i] = 1 }
        return try SparseDictionary(atoms: a, atomCount: m, dimension: m)
    }

    /// Keys coded whole (s_n = 1), values in 2 chunks; one group per part unless `split`.
    static func dictionary(keys: SparseDictionary, values: SparseDictionary, split: Bool = false,
                           model: CSRDictionary.ModelInfo = model) throws -> CSRDictionary {
        func part(_ d: SparseDictionary, chunks: Int) -> CSRDictionary.Part {
            CSRDictionary.Part(chunks: chunks, groups: split
                ? [.init(layers: 0..<1, dictionary: d), .init(layers: 1..<2, dictionary: d)]
                : [.init(layers: 0..<2, dictionary: d)])
        }
        return try CSRDictionary(model: model, keys: part(keys, chunks: 1), values: part(values, chunks: 2),
                                 training: ["note": "test"])
    }

    static func exactCodec(_ tweak: (inout CSRSettings) -> Void = { _ in }) throws -> CSRCodec {
        var s = CSRSettings(keySparsity: d, valueSparsity: d / 2)
        tweak(&s)
        return try CSRCodec(dictionary: try dictionary(keys: basis(d), values: basis(d / 2)), settings: s)
    }

    static func randomCodec(atoms n: Int, seed: UInt64, _ tweak: (inout CSRSettings) -> Void = { _ in }) throws -> CSRCodec {
        var s = CSRSettings(keySparsity: 2, valueSparsity: 1)
        tweak(&s)
        let dict = try dictionary(keys: SparseDictionary(randomAtomCount: n, dimension: d, seed: seed),
                                  values: SparseDictionary(randomAtomCount: n, dimension: d / 2, seed: seed + 1))
        return try CSRCodec(dictionary: dict, settings: s)
    }

    /// (n, kvHeads * d) random rows in [-2, 2]
    static func rows(_ n: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0..<n * geometry.rowWidth).map { _ in Float.random(in: -2...2, using: &g) }
    }

    /// Appends `k`/`v` to every layer in batches of `batch` tokens.
    static func fill(_ c: any KVCache, _ k: [Float], _ v: [Float], batch: Int) throws {
        let w = geometry.rowWidth, n = k.count / w
        for layer in geometry.layers {
            var t = 0
            while t < n {
                let b = min(batch, n - t)
                try k.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in
                        try c.append(layer: layer, keys: kp.baseAddress! + t * w, values: vp.baseAddress! + t * w, count: b)
                    }
                }
                t += b
            }
        }
    }

    /// Two caches of `codec` with the same final rows: one appended 30 tokens one at a
    /// time, was cut to 12 and took 28 others in batches of 3; the other coded the 12 and
    /// the 28 from scratch. A running tally (of gap bits, of coefficient symbols) must
    /// follow the first to what the second counts.
    static func truncatedAndFresh(_ codec: CSRCodec, seed: UInt64) throws -> (CSRCache, CSRCache) {
        let k = rows(40, seed: seed), v = rows(40, seed: seed + 1), other = rows(40, seed: seed + 2), w = geometry.rowWidth
        let a = codec.makeCache(geometry: geometry, rope: rope)
        try fill(a, Array(k[0..<30 * w]), Array(v[0..<30 * w]), batch: 1)
        _ = a.byteCount
        a.truncate(to: 12)
        try fill(a, Array(other[12 * w..<40 * w]), Array(other[12 * w..<40 * w]), batch: 3)
        let b = codec.makeCache(geometry: geometry, rope: rope)
        try fill(b, Array(k[0..<12 * w]), Array(v[0..<12 * w]), batch: 1)
        try fill(b, Array(other[12 * w..<40 * w]), Array(other[12 * w..<40 * w]), batch: 3)
        return (a, b)
    }

    static func read(_ c: any KVCache, layer: Int, head: Int) -> ([Float], [Float]) {
        c.withKeysAndValues(layer: layer, kvHead: head) { k, v, n in
            (Array(UnsafeBufferPointer(start: k, count: n * d)), Array(UnsafeBufferPointer(start: v, count: n * d)))
        }
    }

    /// The `recent=` tests' tokens: 15 random ones (seeds 6 and 7), a prompt of 12 then 3
    /// tokens one at a time, appended to every cache of `caches`; returns their rows.
    static func promptThenThreeTokens(_ caches: [any KVCache]) throws -> (k: [Float], v: [Float]) {
        let k = rows(15, seed: 6), v = rows(15, seed: 7), w = geometry.rowWidth
        for c in caches {
            try fill(c, Array(k[0..<12 * w]), Array(v[0..<12 * w]), batch: 12)
            try fill(c, Array(k[12 * w..<15 * w]), Array(v[12 * w..<15 * w]), batch: 1)
        }
        return (k, v)
    }

    /// What a `recent=` cache's codes should be: a cache of `codec` (no buffer) that codes
    /// tokens 0..<n of `k`/`v`, those in `fp16` from their fp16 rows (as tokens leaving a
    /// buffer are coded), and its byte count then. One more token follows, so that all n
    /// are read from their codes.
    static func codedAlike(_ codec: CSRCodec, _ k: [Float], _ v: [Float], tokens n: Int, fp16: [Range<Int>]) throws
        -> (cache: CSRCache, bytes: Int) {
        let w = geometry.rowWidth
        func form(_ x: [Float]) -> [Float] {
            var y = Array(x[0..<n * w])
            for r in fp16 { for i in r.lowerBound * w..<r.upperBound * w { y[i] = Float(Float16(y[i])) } }
            return y
        }
        let c = codec.makeCache(geometry: geometry, rope: rope)
        try fill(c, form(k), form(v), batch: n)
        let bytes = c.byteCount
        try fill(c, rows(1, seed: 999), rows(1, seed: 998), batch: 1)
        return (c, bytes)
    }
}

@Suite struct CSRCacheTests {
    typealias F = CSRFixture

    @Test func exactDictionaryReadsLikeTheDenseCache() throws {
        let codec = try F.exactCodec()
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        let k = F.rows(40, seed: 1), v = F.rows(40, seed: 2)
        try F.fill(csr, k, v, batch: 7)
        try F.fill(dense, k, v, batch: 7)
        // One more token: the older ones are now read from their codes.
        let k1 = F.rows(1, seed: 3), v1 = F.rows(1, seed: 4)
        try F.fill(csr, k1, v1, batch: 1)
        try F.fill(dense, k1, v1, batch: 1)
        for layer in 0..<2 {
            for h in 0..<2 {
                let (ck, cv) = F.read(csr, layer: layer, head: h), (dk, dv) = F.read(dense, layer: layer, head: h)
                #expect(ck.count == 41 * F.d)
                // fp16 coefficients: relative error 2^-11 of values up to 2.
                #expect(maxAbsDiff(ck, dk) < 3e-3)
                #expect(maxAbsDiff(cv, dv) < 2e-3)
            }
        }
    }

    @Test func latestAppendIsReadExactly() throws {
        let codec = try F.randomCodec(atoms: 8, seed: 5)  // a poor fit: s = 2 of 8 random atoms
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        let k = F.rows(12, seed: 6), v = F.rows(12, seed: 7)
        try F.fill(csr, k, v, batch: 12)
        try F.fill(dense, k, v, batch: 12)
        let (ck, cv) = F.read(csr, layer: 1, head: 0), (dk, dv) = F.read(dense, layer: 1, head: 0)
        #expect(maxAbsDiff(ck, dk) < 1e-5 && maxAbsDiff(cv, dv) < 1e-6)
        // After the next append the first 12 tokens come from their (lossy) codes.
        try F.fill(csr, F.rows(1, seed: 8), F.rows(1, seed: 9), batch: 1)
        let (lk, _) = F.read(csr, layer: 1, head: 0)
        #expect(maxAbsDiff(Array(lk[0..<12 * F.d]), dk) > 0.1)
    }

    /// Once the forward pass has attended (`finishedAttending`), the latest append's exact
    /// rows are gone and its tokens read from their codes, as after the next append; the
    /// attention of a later step is the same either way. A `recent=` buffer keeps its rows.
    @Test func finishedAttendingDropsTheLatestExactRows() throws {
        let codec = try F.randomCodec(atoms: 8, seed: 5)
        let k = F.rows(12, seed: 6), v = F.rows(12, seed: 7), next = (F.rows(1, seed: 8), F.rows(1, seed: 9))
        let kept = codec.makeCache(geometry: F.geometry, rope: F.rope), dropped = codec.makeCache(geometry: F.geometry, rope: F.rope)
        for c in [kept, dropped] { try F.fill(c, k, v, batch: 12) }
        let (exactK, _) = F.read(kept, layer: 1, head: 0)
        for layer in F.geometry.layers { dropped.finishedAttending(layer: layer) }
        let (codedK, codedV) = F.read(dropped, layer: 1, head: 0)
        #expect(maxAbsDiff(codedK, exactK) > 0.1, "read from codes once attended")
        try F.fill(kept, next.0, next.1, batch: 1)
        let (laterK, laterV) = F.read(kept, layer: 1, head: 0)
        #expect(Array(laterK[0..<12 * F.d]) == codedK && Array(laterV[0..<12 * F.d]) == codedV)
        try F.fill(dropped, next.0, next.1, batch: 1)
        let (a, b) = (F.read(kept, layer: 1, head: 0), F.read(dropped, layer: 1, head: 0))
        #expect(a.0 == b.0 && a.1 == b.1, "the next step reads the same cache")

        let buffered = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 4 }.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(buffered, k, v, batch: 12)
        let before = F.read(buffered, layer: 1, head: 0)
        for layer in F.geometry.layers { buffered.finishedAttending(layer: layer) }
        let after = F.read(buffered, layer: 1, head: 0)
        #expect(before.0 == after.0 && before.1 == after.1)
    }

    /// `k@L=S`: a layer's keys take their own number of pairs, which its codes, byte count,
    /// transfer and replica stream follow; the other layers keep `k=`.
    @Test func sparsityAllocatedPerLayer() throws {
        let plain = try F.randomCodec(atoms: 40, seed: 5) { $0.coefficients = .int8 }
        let codec = try F.randomCodec(atoms: 40, seed: 5) { $0.coefficients = .int8; $0.keySparsityByLayer = [1: 6] }
        let k = F.rows(20, seed: 6), v = F.rows(20, seed: 7), w = F.geometry.rowWidth
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), base = plain.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        for c in [csr, base, dense] as [any KVCache] {
            try F.fill(c, Array(k[0..<19 * w]), Array(v[0..<19 * w]), batch: 19)
            try F.fill(c, Array(k[(19 * w)...]), Array(v[(19 * w)...]), batch: 1)
        }
        // Layer 0 is coded as without the override; layer 1's keys fit better with 6 pairs than 2.
        #expect(F.read(csr, layer: 0, head: 1) == F.read(base, layer: 0, head: 1))
        #expect(csr.byteCount(layer: 0) == base.byteCount(layer: 0))
        // 20 tokens x 2 heads x 1 chunk: 6 pairs instead of 2, each a 6-bit index (40 atoms) and an int8 coefficient.
        #expect(csr.byteCount(layer: 1) == base.byteCount(layer: 1) + (20 * 2 * 6 * 6 + 7) / 8 - (20 * 2 * 2 * 6 + 7) / 8 + 20 * 2 * 4)
        let (ck, _) = F.read(csr, layer: 1, head: 0), (bk, _) = F.read(base, layer: 1, head: 0), (dk, _) = F.read(dense, layer: 1, head: 0)
        let d = F.d, old = 19 * d
        #expect(maxAbsDiff(Array(ck[0..<old]), Array(dk[0..<old])) < maxAbsDiff(Array(bk[0..<old]), Array(dk[0..<old])))
        // The transfer names the allocation; another allocation refuses it.
        let copy = try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(try copy.serialize(layers: 1..<2) == csr.serialize(layers: 1..<2))
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: plain) }
        try ReplicaTests.checkReplica(codec.makeCache(geometry: F.geometry, rope: F.rope)) {
            try CSRCache.deserialize($0, capacity: F.geometry.capacity, rope: F.rope, codec: codec)
        }
        // A layer the model does not have is refused when the codec is made.
        #expect(throws: CSRError.self) { try F.randomCodec(atoms: 40, seed: 5) { $0.keySparsityByLayer = [2: 4] } }
    }

    @Test func byteCountIsEveryStoredByte() throws {
        for format in CoefficientFormat.allCases {
            let codec = try F.randomCodec(atoms: 100, seed: 10) { $0.keySparsity = 3; $0.valueSparsity = 2; $0.coefficients = format }
            let c = codec.makeCache(geometry: F.geometry, rope: F.rope)
            try F.fill(c, F.rows(33, seed: 11), F.rows(33, seed: 12), batch: 5)
            // 100 atoms: 7-bit indices. Keys: 33 tokens * 2 heads rows of 3 pairs; values: 2 chunks, 2 pairs.
            let keyRows = 33 * 2, valueRows = 33 * 2 * 2
            func stream(_ rows: Int, _ s: Int) -> Int {
                (rows * s * 7 + 7) / 8 + (format == .float16 ? rows * s * 2 : rows * s + rows * 2)
            }
            #expect(c.byteCount(layer: 0) == stream(keyRows, 3) + stream(valueRows, 2))
            #expect(c.byteCount == 2 * c.byteCount(layer: 0))
        }
    }

    @Test func serializationRoundTripsAndContinues() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 13) { $0.onlineAtoms = 4; $0.guardFraction = 0.1; $0.guardError = 0.2; $0.coefficients = .int8; $0.keySparsity = 3 }
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(30, seed: 14), F.rows(30, seed: 15), batch: 30)
        try F.fill(a, F.rows(3, seed: 16), F.rows(3, seed: 17), batch: 1)
        #expect(a.onlineAndGuardByteCount > 0)
        let bytes = try a.serialize(layers: 0..<2)
        let b = try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: codec)
        #expect(b.byteCount == a.byteCount && b.tokenCount == 33)
        // Both continue identically; the pending exact rows of `a` are gone after this append.
        for c in [a, b] { try F.fill(c, F.rows(2, seed: 18), F.rows(2, seed: 19), batch: 2) }
        for layer in 0..<2 {
            for h in 0..<2 {
                let (ak, av) = F.read(a, layer: layer, head: h), (bk, bv) = F.read(b, layer: layer, head: h)
                #expect(ak == bk && av == bv)
            }
        }
        // A layer sub-range carries only those layers.
        let one = try CSRCache.deserialize(try a.serialize(layers: 1..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(one.geometry.layers == 1..<2 && one.byteCount(layer: 1) == a.byteCount(layer: 1))
    }

    @Test func payloadsFromAnotherDictionaryOrDamagedAreRefused() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 20)
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, F.rows(10, seed: 21), F.rows(10, seed: 22), batch: 10)
        let bytes = try a.serialize(layers: 0..<2)
        let other = try F.randomCodec(atoms: 40, seed: 99)
        #expect(throws: CSRError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: other) }
        let otherSettings = try F.randomCodec(atoms: 40, seed: 20) { $0.keySparsity = 3 }
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: otherSettings) }
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: (any Error).self) { try CSRCache.deserialize(Array(bytes[0..<cut]), capacity: 256, rope: F.rope, codec: codec) }
        }
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes + [0], capacity: 256, rope: F.rope, codec: codec) }
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 5, rope: F.rope, codec: codec) }
    }

    @Test func truncateThenAppendMatchesAFreshCache() throws {
        let codec = try F.randomCodec(atoms: 30, seed: 23) { $0.keySparsity = 3 }
        let k = F.rows(20, seed: 24), v = F.rows(20, seed: 25)
        let a = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(a, k, v, batch: 1)
        a.truncate(to: 13)
        try F.fill(a, Array(k[13 * 32..<20 * 32]), Array(v[13 * 32..<20 * 32]), batch: 1)
        let b = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(b, k, v, batch: 1)
        #expect(try a.serialize(layers: 0..<2) == b.serialize(layers: 0..<2))
    }

    /// `recent=W`: the W latest tokens read as their fp16 rows, older ones from their codes;
    /// the buffer is counted, carried by the transfer and kept by truncation.
    @Test func recentBufferReadsTheLatestTokensInFP16() throws {
        let plain = try F.randomCodec(atoms: 8, seed: 5)  // a poor fit: s = 2 of 8 random atoms
        let codec = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5 }
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), lossy = plain.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        let (k, v) = try F.promptThenThreeTokens([csr, lossy, dense]), w = F.geometry.rowWidth
        // Rows of the 4 buffered tokens before the latest are fp16 (relative error 2^-11 of
        // values up to 2, rotated); the latest is exact; older tokens are their codes.
        let (ck, cv) = F.read(csr, layer: 1, head: 0), (dk, dv) = F.read(dense, layer: 1, head: 0)
        let (lk, _) = F.read(lossy, layer: 1, head: 0), d = F.d
        #expect(maxAbsDiff(Array(ck[10 * d..<14 * d]), Array(dk[10 * d..<14 * d])) < 2.5e-3)
        #expect(maxAbsDiff(Array(cv[10 * d..<14 * d]), Array(dv[10 * d..<14 * d])) < 1.5e-3)
        #expect(maxAbsDiff(Array(ck[(14 * d)...]), Array(dk[(14 * d)...])) < 1e-5)
        #expect(maxAbsDiff(Array(lk[10 * d..<14 * d]), Array(dk[10 * d..<14 * d])) > 0.1)
        // A token is coded when it leaves the buffer: the prompt's first 7 from their rows,
        // tokens 7, 8 and 9 from their fp16 rows as the next three tokens pushed them out.
        #expect((0..<2).allSatisfy { csr.codedTokens($0) == 10 })
        let alike = try F.codedAlike(plain, k, v, tokens: 10, fp16: [7..<10])
        let (ok, ov) = F.read(alike.cache, layer: 1, head: 0)
        #expect(Array(ck[0..<10 * d]) == Array(ok[0..<10 * d]) && Array(cv[0..<10 * d]) == Array(ov[0..<10 * d]))
        // Counted: the codes of 10 tokens and 5 tokens' keys and values in fp16 per layer.
        #expect(csr.byteCount == alike.bytes + 2 * 5 * w * 2 * 2)
        // The transfer carries the buffer: both continue alike, and the stamp names recent=5.
        let copy = try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(copy.byteCount == csr.byteCount)
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: plain) }
        let more = F.rows(2, seed: 8)
        for c in [csr, copy] { try F.fill(c, more, more, batch: 1) }
        for layer in 0..<2 {
            for h in 0..<2 {
                let (ak, av) = F.read(csr, layer: layer, head: h), (bk, bv) = F.read(copy, layer: layer, head: h)
                #expect(ak == bk && av == bv)
            }
        }
        // Cut back by a token (a resumed session), the buffer keeps its rows below the cut, and
        // after the next token holds what a cache that never went further holds.
        let fresh = codec.makeCache(geometry: F.geometry, rope: F.rope)
        _ = try F.promptThenThreeTokens([fresh])
        try F.fill(fresh, Array(more[0..<w]), Array(more[0..<w]), batch: 1)
        csr.truncate(to: 16)
        let next = F.rows(1, seed: 9)
        for c in [csr, fresh] { try F.fill(c, next, next, batch: 1) }
        #expect(try csr.serialize(layers: 0..<2) == fresh.serialize(layers: 0..<2))
        #expect(F.read(csr, layer: 0, head: 1) == F.read(fresh, layer: 0, head: 1))
        // Cut back past the buffer: every token left is coded, and the buffer fills again
        // from the next token on, carried by the transfer.
        csr.truncate(to: 8)
        #expect((0..<2).allSatisfy { csr.codedTokens($0) == 8 && csr.storedRecentTokens(layer: $0) == 0 })
        try F.fill(csr, next, next, batch: 1)
        #expect((0..<2).allSatisfy { csr.codedTokens($0) == 8 && csr.storedRecentTokens(layer: $0) == 1 })
        let again = try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(try again.serialize(layers: 0..<2) == csr.serialize(layers: 0..<2) && again.byteCount == csr.byteCount)
    }

    /// A prompt prefilled in calls longer than the buffer (a long prompt's blocks): each call
    /// replaces the buffer, which then holds the latest call's rows, and the byte count the
    /// latest W tokens'. (Calls of more than W tokens after an earlier call used to trap.)
    @Test func recentBufferTakesPrefillCallsLongerThanItself() throws {
        let plain = try F.randomCodec(atoms: 8, seed: 5)
        let codec = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5 }
        let k = F.rows(15, seed: 6), v = F.rows(15, seed: 7), w = F.geometry.rowWidth, d = F.d
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        // Calls of 6, 6 and 3 tokens, then one of 7 (again longer than the buffer).
        for c in [csr, dense] as [any KVCache] { try F.fill(c, k, v, batch: 6) }
        let (ck, _) = F.read(csr, layer: 1, head: 0), (dk, _) = F.read(dense, layer: 1, head: 0)
        #expect(maxAbsDiff(Array(ck[10 * d..<12 * d]), Array(dk[10 * d..<12 * d])) < 2.5e-3)  // fp16 rows of the 2nd call
        #expect(maxAbsDiff(Array(ck[(12 * d)...]), Array(dk[(12 * d)...])) < 1e-5)  // the latest call, exact
        // Coded as they left the buffer: token 0 by the first call (exact), 1-5 by the second
        // (fp16, they had been buffered) with 6 (exact, it never was), 7-9 by the third (fp16).
        let alike = try F.codedAlike(plain, k, v, tokens: 10, fp16: [1..<6, 7..<10])
        #expect(Array(ck[0..<10 * d]) == Array(F.read(alike.cache, layer: 1, head: 0).0[0..<10 * d]))
        #expect(csr.byteCount == alike.bytes + 2 * 5 * w * 2 * 2)
        let more = F.rows(7, seed: 8)
        for c in [csr, dense] as [any KVCache] { try F.fill(c, more, more, batch: 7) }
        let (ek, _) = F.read(csr, layer: 1, head: 0), (fk, _) = F.read(dense, layer: 1, head: 0)
        #expect(maxAbsDiff(Array(ek[(15 * d)...]), Array(fk[(15 * d)...])) < 1e-5)
        // Then 10-14 (fp16) and 15-16 (exact, read from the latest call's rows for now) leave it.
        let later = try F.codedAlike(plain, k + more, v + more, tokens: 17, fp16: [1..<6, 7..<15])
        #expect(Array(ek[0..<15 * d]) == Array(F.read(later.cache, layer: 1, head: 0).0[0..<15 * d]))
        #expect((0..<2).allSatisfy { csr.codedTokens($0) == 17 })
        #expect(csr.byteCount == later.bytes + 2 * 5 * w * 2 * 2)
    }

    /// `sink=N`: the first N tokens' vectors are guard rows (fp16, counted, transferred),
    /// whatever their error and outside the guard's budget; later tokens are coded as before.
    @Test func sinkTokensAreKeptInTheGuardBank() throws {
        let plain = try F.randomCodec(atoms: 8, seed: 5)  // a poor fit: s = 2 of 8 random atoms
        let codec = try F.randomCodec(atoms: 8, seed: 5) { $0.sinkTokens = 3 }
        let k = F.rows(13, seed: 6), v = F.rows(13, seed: 7)
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), lossy = plain.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        for c in [csr, lossy, dense] as [any KVCache] { try F.fill(c, k, v, batch: 2) }
        let d = F.d
        for layer in 0..<2 {
            for h in 0..<2 {
                let (ck, cv) = F.read(csr, layer: layer, head: h), (dk, dv) = F.read(dense, layer: layer, head: h)
                let (lk, lv) = F.read(lossy, layer: layer, head: h)
                #expect(maxAbsDiff(Array(ck[0..<3 * d]), Array(dk[0..<3 * d])) < 2.5e-3)
                #expect(maxAbsDiff(Array(cv[0..<3 * d]), Array(dv[0..<3 * d])) < 1.5e-3)
                #expect(maxAbsDiff(Array(lk[0..<3 * d]), Array(dk[0..<3 * d])) > 0.1)
                #expect(Array(ck[(3 * d)...]) == Array(lk[(3 * d)...]) && Array(cv[(3 * d)...]) == Array(lv[(3 * d)...]))
            }
        }
        // 3 tokens' guard rows per layer: keys 2 rows of 16, values 4 rows of 8, each a u32 row and fp16 values.
        #expect(csr.byteCount(layer: 1) == lossy.byteCount(layer: 1) + 3 * (2 * (4 + 16 * 2) + 4 * (4 + 8 * 2)))
        // The guard's own budget does not count the sink: guard=0.1 keeps as many others as without it.
        let guarded = try F.randomCodec(atoms: 8, seed: 5) { $0.guardFraction = 0.1 }
        let both = try F.randomCodec(atoms: 8, seed: 5) { $0.guardFraction = 0.1; $0.sinkTokens = 3 }
        let g = guarded.makeCache(geometry: F.geometry, rope: F.rope), b = both.makeCache(geometry: F.geometry, rope: F.rope)
        for c in [g, b] { try F.fill(c, k, v, batch: 13) }
        #expect(g.keyStreams[0].guardRows.count == 2 && b.keyStreams[0].guardRows.count == 8)
        #expect(Array(b.keyStreams[0].guardRows.prefix(6)) == [0, 1, 2, 3, 4, 5])
        // The transfer carries them (the latest append's exact row stays behind).
        let copy = try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(copy.byteCount == csr.byteCount)
        #expect(F.read(copy, layer: 0, head: 1).0.prefix(12 * d) == F.read(csr, layer: 0, head: 1).0.prefix(12 * d))
    }

    /// `coef=i6`: coefficients quantized to -31...31 against the row's scale, held as int8,
    /// stored and transferred in 6 bits each; the transfer restores them exactly.
    @Test func sixBitCoefficientsAreStoredInSixBits() throws {
        let codec = try F.randomCodec(atoms: 100, seed: 10) { $0.keySparsity = 3; $0.valueSparsity = 2; $0.coefficients = .int8; $0.coefficientBits = 6 }
        #expect(codec.settings.description.contains("coef=i6"))
        let c = codec.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(c, F.rows(33, seed: 11), F.rows(33, seed: 12), batch: 5)
        let keyRows = 33 * 2, valueRows = 33 * 2 * 2
        func stream(_ rows: Int, _ s: Int) -> Int { (rows * s * 7 + 7) / 8 + (rows * s * 6 + 7) / 8 + rows * 2 }
        #expect(c.byteCount(layer: 0) == stream(keyRows, 3) + stream(valueRows, 2))
        let ks = c.keyStreams[0]
        #expect(ks.coefficients8.allSatisfy { abs(Int($0)) <= 31 } && ks.coefficients8.contains { abs(Int($0)) == 31 })
        let bytes = try c.serialize(layers: 0..<2)
        let copy = try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: codec)
        #expect(copy.keyStreams[1].coefficients8 == c.keyStreams[1].coefficients8 && copy.valueStreams[0].scales == c.valueStreams[0].scales)
        #expect(try copy.serialize(layers: 0..<2) == bytes)
        // The 8-bit reading of the same settings otherwise is another layout, refused by the stamp.
        let eight = try F.randomCodec(atoms: 100, seed: 10) { $0.keySparsity = 3; $0.valueSparsity = 2; $0.coefficients = .int8 }
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(bytes, capacity: 256, rope: F.rope, codec: eight) }
        for cut in stride(from: 0, to: bytes.count, by: 11) {
            #expect(throws: (any Error).self) { try CSRCache.deserialize(Array(bytes[0..<cut]), capacity: 256, rope: F.rope, codec: codec) }
        }
    }

    /// A decode step's rows coded on two threads are stored as a serial append stores them,
    /// with every storage option the coding feeds (int8, guard, error targeting).
    @Test func decodeStepCodedOnTwoThreadsStoresTheSerialCodes() throws {
        let tweaks: [(inout CSRSettings) -> Void] = [
            { $0.keySparsity = 3 },
            { $0.keySparsity = 4; $0.valueSparsity = 2; $0.coefficients = .int8; $0.guardFraction = 0.2; $0.guardError = 0.3 },
            { $0.keySparsity = 5; $0.valueSparsity = 3; $0.errorBudget = 0.2 },
        ]
        for (i, tweak) in tweaks.enumerated() {
            let codec = try F.randomCodec(atoms: 60, seed: 40 + UInt64(i), tweak)
            let together = codec.makeCache(geometry: F.geometry, rope: F.rope)
            let serial = codec.makeCache(geometry: F.geometry, rope: F.rope)
            let w = F.geometry.rowWidth, k = F.rows(9, seed: 50), v = F.rows(9, seed: 51)
            for (t, n) in [(0, 1), (1, 3), (4, 1), (5, 4)] {
                try k.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in
                        let kr = kp.baseAddress! + t * w, vr = vp.baseAddress! + t * w
                        try CSRCache.appendCodedTogether(together.keyStreams[0], kr, together.valueStreams[0], vr,
                                                         width: n * w, threads: 2)
                        try serial.keyStreams[0].append(kr, count: n * w / F.d)
                        try serial.valueStreams[0].append(vr, count: n * w / (F.d / 2))
                    }
                }
            }
            for (a, b) in [(together.keyStreams[0], serial.keyStreams[0]), (together.valueStreams[0], serial.valueStreams[0])] {
                #expect(a.rows == b.rows && a.rows > 0)
                #expect(a.indexBytes == b.indexBytes)
                #expect(a.coefficients16 == b.coefficients16 && a.coefficients8 == b.coefficients8 && a.scales == b.scales)
                #expect(a.guardRows == b.guardRows && a.guardValues == b.guardValues && a.pairCounts == b.pairCounts)
            }
        }
    }

    /// A decode step's pursuit run beside its attention (`appendAndAttend`) gives the
    /// attention output and the stored codes of an append followed by an attention, bit for
    /// bit, on two compute threads and on one (which makes the two calls).
    @Test func decodeStepAttendedBesideItsCodingIsAppendThenAttend() throws {
        let tweaks: [(inout CSRSettings) -> Void] = [
            { $0.keySparsity = 3 },
            { $0.keySparsity = 4; $0.valueSparsity = 2; $0.coefficients = .int8; $0.guardFraction = 0.2; $0.guardError = 0.3 },
        ]
        let before = ComputeThreads.count
        defer { ComputeThreads.set(before) }
        for threads in [2, 1] {
            ComputeThreads.set(threads)
            for (i, tweak) in tweaks.enumerated() {
                let codec = try F.randomCodec(atoms: 60, seed: 70 + UInt64(i), tweak)
                let beside = codec.makeCache(geometry: F.geometry, rope: F.rope)
                let serial = codec.makeCache(geometry: F.geometry, rope: F.rope)
                let w = F.geometry.rowWidth, heads = 2 * F.geometry.kvHeads
                let k = F.rows(60, seed: 71), v = F.rows(60, seed: 72), q = F.rows(8, seed: 73) + F.rows(8, seed: 74)
                for c in [beside, serial] { try F.fill(c, Array(k[0..<40 * w]), Array(v[0..<40 * w]), batch: 40) }
                var t = 40
                for n in [1, 1, 3, 1, 4, 2, 1] {
                    var a = [Float](repeating: 0, count: n * heads * F.d), b = a
                    for layer in F.geometry.layers {
                        try k.withUnsafeBufferPointer { kp in
                            try v.withUnsafeBufferPointer { vp in
                                try q.withUnsafeBufferPointer { qp in
                                    let kr = kp.baseAddress! + t * w, vr = vp.baseAddress! + t * w
                                    try a.withUnsafeMutableBufferPointer {
                                        try beside.appendAndAttend(layer: layer, keys: kr, values: vr, count: n, queries: qp.baseAddress!,
                                                                   heads: heads, scale: 0.25, into: $0.baseAddress!)
                                    }
                                    try serial.append(layer: layer, keys: kr, values: vr, count: n)
                                    try b.withUnsafeMutableBufferPointer {
                                        try serial.attend(layer: layer, queries: qp.baseAddress!, count: n, heads: heads, scale: 0.25,
                                                          into: $0.baseAddress!)
                                    }
                                }
                            }
                        }
                        beside.finishedAttending(layer: layer)
                        serial.finishedAttending(layer: layer)
                        #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "threads \(threads), settings \(i), token \(t), layer \(layer)")
                    }
                    t += n
                    #expect(beside.count(layer: 1) == t)
                    #expect(try beside.serialize(layers: 0..<2) == serial.serialize(layers: 0..<2), "threads \(threads), settings \(i), token \(t)")
                }
            }
        }
    }

    @Test func guardBankKeepsTheWorstVectorsExactly() throws {
        // One random atom per vector fits badly; guard everything above 1% error.
        let codec = try F.randomCodec(atoms: 8, seed: 26) { $0.keySparsity = 1; $0.guardFraction = 1; $0.guardError = 0.01 }
        let c = codec.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        let k = F.rows(10, seed: 27), v = F.rows(10, seed: 28)
        for x in [c, dense] as [any KVCache] {
            try F.fill(x, k, v, batch: 10)
            try F.fill(x, F.rows(1, seed: 29), F.rows(1, seed: 30), batch: 1)
        }
        let (ck, cv) = F.read(c, layer: 0, head: 1), (dk, dv) = F.read(dense, layer: 0, head: 1)
        #expect(maxAbsDiff(ck, dk) < 3e-3 && maxAbsDiff(cv, dv) < 2e-3)
        // A budget of 10% keeps only that many.
        let limited = try F.randomCodec(atoms: 8, seed: 26) { $0.keySparsity = 1; $0.guardFraction = 0.1; $0.guardError = 0.01 }
        let l = limited.makeCache(geometry: F.geometry, rope: F.rope)
        try F.fill(l, k, v, batch: 10)
        #expect(l.keyStreams[0].guardRows.count == 2)  // 10% of 20 key rows
    }

    @Test func onlineAtomsFitThePromptBetter() throws {
        // Prompt vectors near a few fixed directions the random offline atoms miss.
        var g = SeededGenerator(seed: 31)
        let directions = (0..<4).map { _ in (0..<F.d).map { _ in Float.random(in: -1...1, using: &g) } }
        var k: [Float] = []
        for t in 0..<64 { for _ in 0..<2 { k += directions[t % 4].map { $0 * 2 + Float.random(in: -0.02...0.02, using: &g) } } }
        let v = F.rows(64, seed: 32)
        func keyError(online: Int) throws -> Float {
            let codec = try F.randomCodec(atoms: 16, seed: 33) { $0.keySparsity = 1; $0.onlineAtoms = online }
            let c = codec.makeCache(geometry: F.geometry, rope: F.rope)
            let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
            for x in [c, dense] as [any KVCache] {
                try F.fill(x, k, v, batch: 64)
                try F.fill(x, F.rows(1, seed: 34), F.rows(1, seed: 35), batch: 1)
            }
            let (ck, _) = F.read(c, layer: 0, head: 0), (dk, _) = F.read(dense, layer: 0, head: 0)
            return zip(ck[0..<64 * F.d], dk[0..<64 * F.d]).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        }
        let without = try keyError(online: 0), with = try keyError(online: 8)
        #expect(with < without * 0.1, "squared error \(with) with online atoms, \(without) without")
    }

    @Test func settingsParse() throws {
        let a = try CSRSettings(parsing: "8")
        #expect(a.keySparsity == 8 && a.valueSparsity == 4 && a.coefficients == .float16)
        let b = try CSRSettings(parsing: "k=3,v=1,coef=i8,alg=omp,online=16,guard=0.01")
        #expect(b.keySparsity == 3 && b.valueSparsity == 1 && b.coefficients == .int8 && b.onlineAtoms == 16 && b.guardFraction == 0.01 && b.algorithm == .orthogonal)
        #expect(try CSRSettings(parsing: b.description) == b)
        #expect(try CSRSettings(parsing: "1").valueSparsity == 1)
        let c = try CSRSettings(parsing: "csr:8,coef=i8,recent=32")
        #expect(c.recentTokens == 32 && c.description == "csr:k=8,v=4,coef=i8,recent=32")
        #expect(try CSRSettings(parsing: c.description) == c && a.recentTokens == 0)
        let i6 = try CSRSettings(parsing: "16,coef=i6,sink=4")
        #expect(i6.coefficients == .int8 && i6.coefficientBits == 6 && i6.sinkTokens == 4 && c.coefficientBits == 8)
        #expect(try CSRSettings(parsing: i6.description) == i6)
        let pl = try CSRSettings(parsing: "csr:8,k@0-1=16,k@3=16,k@2=16,v@5=4,k@7=8,v@6-7=2")
        #expect(pl.keySparsity(layer: 0) == 16 && pl.keySparsity(layer: 3) == 16 && pl.keySparsity(layer: 4) == 8)
        #expect(pl.valueSparsity(layer: 5) == 4 && pl.valueSparsity(layer: 7) == 2 && pl.valueSparsity(layer: 8) == 4)
        #expect(pl.description == "csr:k=8,v=4,k@0-3=16,v@6-7=2", "overrides equal to the default are dropped, runs merged")
        #expect(try CSRSettings(parsing: pl.description) == pl)
        for bad in ["", "x", "0", "8,coef=f8", "8,k", "8,size=2", "k=3", "8,guard=2", "70000", "8,alg=ksvd", "8,recent=-1", "8,recent=5000", "8,coef=i3", "8,coef=i9",
                    "8,k@=3", "8,k@a=3", "8,k@3-1=2", "8,k@2=0", "8,k@2=70000", "8,k@-1=2", "8,x@2=3"] {
            #expect(throws: CSRError.self, "\(bad)") { try CSRSettings(parsing: bad) }
        }
        #expect(throws: CSRError.dictionaryRequired) { try KVCacheType(parsing: "csr:8") }
    }
}
