import CShims
import Foundation
import Testing
@testable import SparseKVEngine

@Suite struct KIVICacheTests {
    static let d = 64
    static let geometry = KVCacheGeometry(layers: 0..<2, kvHeads: 2, headDim: d, capacity: 512)
    static let rope = RoPE(headDim: d, ropeDimension: d, base: 10000)

    /// (n, kvHeads * d) random rows
    static func rows(_ n: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0..<n * geometry.rowWidth).map { _ in Float.random(in: -3...3, using: &g) }
    }

    static func filled(bits: Int, window: Int, tokens: Int) throws -> (KIVICache, [Float], [Float]) {
        let c = KIVICache(geometry: geometry, rope: rope, bits: bits, window: window)
        let k = rows(tokens, seed: 11), v = rows(tokens, seed: 12)
        for layer in 0..<2 {
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    // One token at a time, as decoding appends.
                    for t in 0..<tokens {
                        try c.append(layer: layer, keys: kp.baseAddress! + t * 128, values: vp.baseAddress! + t * 128, count: 1)
                    }
                }
            }
        }
        return (c, k, v)
    }

    func read(_ c: any KVCache, layer: Int, head: Int) -> ([Float], [Float]) {
        c.withKeysAndValues(layer: layer, kvHead: head) { k, v, n in
            (Array(UnsafeBufferPointer(start: k, count: n * Self.d)), Array(UnsafeBufferPointer(start: v, count: n * Self.d)))
        }
    }

    @Test(arguments: [2, 4, 8])
    func quantizedTokensStayWithinHalfAStep(bits: Int) throws {
        let tokens = 200, window = 64
        let (c, k, v) = try Self.filled(bits: bits, window: window, tokens: tokens)
        let (rk, rv) = read(c, layer: 1, head: 1)
        #expect(rk.count == tokens * Self.d && c.count(layer: 1) == tokens)
        // 200 tokens, window 64: groups are cut while the fp16 part reaches 96, so 4 groups (128 tokens).
        let quantized = 128
        let step = 6 / Float((1 << bits) - 1)  // values span [-3, 3]
        for t in 0..<tokens {
            var key = Array(k[t * 128 + 64..<t * 128 + 128])
            key.withUnsafeMutableBufferPointer { Self.rope.apply($0.baseAddress!, heads: 1, position: t) }
            let value = Array(v[t * 128 + 64..<t * 128 + 128])
            // Rotated keys span up to about sqrt(2) * 3 per channel pair.
            let tolK: Float = t < quantized ? step * 1.5 * 0.5 + 0.02 : 0.01
            let tolV: Float = t < quantized ? step * 0.5 + 0.02 : 0.01
            #expect(maxAbsDiff(Array(rk[t * 64..<(t + 1) * 64]), key) <= tolK, "token \(t)")
            #expect(maxAbsDiff(Array(rv[t * 64..<(t + 1) * 64]), value) <= tolV, "token \(t)")
        }
        // Every stored byte: codes, fp16 scale/min pairs, fp16 window.
        let groups = 4, recent = tokens - quantized
        let perHead = 2 * groups * 32 * Self.d * bits / 8 + 2 * (groups * 2 * Self.d) + 2 * (quantized * 2 * 2)
            + 2 * 2 * recent * Self.d
        #expect(c.byteCount(layer: 1) == 2 * perHead)
        let fp16Bytes = 2 * 2 * tokens * Self.d * 2 * 2  // layers * heads * tokens * d * (K, V) * 2 bytes
        #expect(c.byteCount == 2 * 2 * perHead && c.byteCount < fp16Bytes)
    }

    /// KIVI's quantization written out plainly, one code at a time: asymmetric, `bits` bits,
    /// an fp16 scale ((max - min) / levels) and minimum per group, round half away from zero.
    static func plainQuantized(_ x: [Float], bits: Int) -> (codes: [UInt8], scale: Float16, zero: Float16) {
        let lo = x.min()!, hi = x.max()!, levels = Float((1 << bits) - 1)
        let scale = Float16((hi - lo) / levels), zero = Float16(lo)
        let codes = x.map { v -> UInt8 in
            guard Float(scale) > 0 else { return 0 }
            return UInt8(min(levels, max(0, ((v - Float(zero)) / Float(scale)).rounded())))
        }
        return (codes, scale, zero)
    }

    static func plainPacked(_ codes: [UInt8], bits: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: codes.count * bits / 8)
        for (i, c) in codes.enumerated() { out[i * bits / 8] |= c << UInt8(i * bits % 8) }
        return out
    }

    /// Appends of uneven sizes (a prompt chunk, single tokens, another chunk): every stored
    /// code, scale and minimum is KIVI's quantization of the rotated fp16 rows, group by
    /// group, and the window keeps the rest, cut where the window rule cuts it.
    @Test(arguments: [2, 4, 8])
    func storedGroupsAreThePlainQuantizationOfTheRows(bits: Int) throws {
        let window = 40, d = Self.d, g = KIVICache.group
        let chunks = [150, 1, 1, 37] + Array(repeating: 1, count: 30) + [90, 1]
        let total = chunks.reduce(0, +)
        let c = KIVICache(geometry: Self.geometry, rope: Self.rope, bits: bits, window: window)
        let k = Self.rows(total, seed: 21), v = Self.rows(total, seed: 22)
        var start = 0, groups = 0
        for n in chunks {
            // The window rule: before an append, groups of 32 go while it holds window + 32 or more.
            while start - groups * g >= window + g { groups += 1 }
            for layer in 0..<2 {
                try k.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in
                        try c.append(layer: layer, keys: kp.baseAddress! + start * 128, values: vp.baseAddress! + start * 128, count: n)
                    }
                }
            }
            start += n
        }
        for layer in 0..<2 {
            for h in 0..<2 {
                let slot = c.slots[layer * 2 + h]
                #expect(slot.groups == groups)
                // Rotated keys and values as the window stores them (fp16).
                var keys: [Float] = [], values: [Float] = []
                for t in 0..<total {
                    var key = Array(k[t * 128 + h * d..<t * 128 + (h + 1) * d])
                    key.withUnsafeMutableBufferPointer { Self.rope.apply($0.baseAddress!, heads: 1, position: t) }
                    for i in 0..<d {
                        keys.append(Float(Float16(key[i])))
                        values.append(Float(Float16(v[t * 128 + h * d + i])))
                    }
                }
                var keyCodes: [UInt8] = [], keyParams: [Float16] = [], valueCodes: [UInt8] = [], valueParams: [Float16] = []
                for grp in 0..<groups {
                    var codes = [UInt8](repeating: 0, count: g * d), scales: [Float16] = [], zeros: [Float16] = []
                    for ch in 0..<d {
                        let q = Self.plainQuantized((0..<g).map { keys[(grp * g + $0) * d + ch] }, bits: bits)
                        for t in 0..<g { codes[t * d + ch] = q.codes[t] }
                        scales.append(q.scale)
                        zeros.append(q.zero)
                    }
                    keyCodes += Self.plainPacked(codes, bits: bits)
                    keyParams += scales + zeros
                    for t in grp * g..<(grp + 1) * g {
                        let parts = (0..<d / g).map { Self.plainQuantized(Array(values[t * d + $0 * g..<t * d + ($0 + 1) * g]), bits: bits) }
                        valueCodes += Self.plainPacked(parts.flatMap(\.codes), bits: bits)
                        valueParams += parts.map(\.scale) + parts.map(\.zero)
                    }
                }
                #expect(slot.keyCodes == keyCodes, "layer \(layer) head \(h)")
                #expect(slot.keyParams == keyParams)
                #expect(slot.valueCodes == valueCodes)
                #expect(slot.valueParams == valueParams)
                let quantized = groups * g * d
                let recentK: [Float] = slot.recentK.map { Float($0) }, recentV: [Float] = slot.recentV.map { Float($0) }
                #expect(recentK == Array(keys[quantized...]))
                #expect(recentV == Array(values[quantized...]))
            }
        }
    }

    /// The code kernels (portable C, and AVX2 eight at a time) against KIVI's definition in
    /// Swift, value for value: values at, just below and just above every half step, past
    /// both ends, NaN and infinities; scales of 0, below 0 and NaN; random scales and
    /// minimums; lengths that leave a tail.
    @Test func codesAreThePlainDefinitionAtHalvesEndsAndBadScales() {
        var x: [Float] = [], scale: [Float] = [], zero: [Float] = []
        for k in -3...260 {
            let half: Float = 0.5
            for delta in [-half, half.nextDown, 0, half, half.nextUp] {
                x.append(Float(k) + delta)
                scale.append(1)
                zero.append(0)
            }
        }
        for v: Float in [.nan, .infinity, -.infinity, 1e30, -1e30, -0.0, 0.3] {
            for s: Float in [1, 0, -1, .nan, 1e-30] {
                x.append(v)
                scale.append(s)
                zero.append(0)
            }
        }
        var g = SeededGenerator(seed: 5)
        for _ in 0..<300 {
            x.append(Float.random(in: -4...4, using: &g))
            scale.append(Float(Float16(Float.random(in: 0...0.6, using: &g))))
            zero.append(Float(Float16(Float.random(in: -4...0, using: &g))))
        }
        for bits in [2, 4, 8] {
            let levels = Float((1 << bits) - 1)
            let expected: [UInt8] = x.indices.map { i in
                guard scale[i] > 0 else { return 0 }
                let q = ((x[i] - zero[i]) / scale[i]).rounded()
                return UInt8(min(levels, max(0, q)))
            }
            for n in [x.count, x.count - 3, 7] {
                var portable = [UInt8](repeating: 99, count: n)
                sparsekv_kivi_codes(x, scale, zero, n, levels, &portable)
                #expect(portable == Array(expected.prefix(n)), "\(bits) bits, \(n) values")
                #if arch(x86_64)
                if sparsekv_cpu_has_avx2() != 0 {
                    var wide = [UInt8](repeating: 99, count: n)
                    sparsekv_kivi_codes_avx2(x, scale, zero, n, levels, &wide)
                    #expect(wide == Array(expected.prefix(n)), "\(bits) bits, \(n) values, AVX2")
                }
                #endif
            }
        }
    }

    /// 4-bit codes widened 16 at a time (AVX2) and one byte at a time give the same floats:
    /// every byte value, low nibble first, at lengths that leave a tail.
    @Test func unpackedFourBitCodesAreTheNibbles() {
        let tail: [UInt8] = (0..<21).map { UInt8(($0 * 37 + 11) % 256) }
        let bytes: [UInt8] = (0..<256).map { UInt8($0) } + tail
        for n in [1, 7, 8, 9, 32, 277] {
            let expected: [Float] = bytes.prefix(n).flatMap { (b: UInt8) -> [Float] in [Float(b & 15), Float(b >> 4)] }
            var portable = [Float](repeating: -1, count: 2 * n)
            sparsekv_kivi_unpack4(bytes, n, &portable)
            #expect(portable == expected, "\(n) bytes")
            var viaSwift = [Float](repeating: -1, count: 2 * n)
            KIVICodes.unpack(bytes, count: 2 * n, bits: 4, into: &viaSwift)
            #expect(viaSwift == expected, "\(n) bytes through KIVICodes")
            #if arch(x86_64)
            if sparsekv_cpu_has_avx2() != 0 {
                var wide = [Float](repeating: -1, count: 2 * n)
                sparsekv_kivi_unpack4_avx2(bytes, n, &wide)
                #expect(wide == expected, "\(n) bytes, AVX2")
            }
            #endif
        }
    }

    @Test func serializationRoundTripsAndRejectsDamage() throws {
        let (c, _, _) = try Self.filled(bits: 4, window: 32, tokens: 150)
        let bytes = try c.serialize(layers: 1..<2)
        let back = try KIVICache.deserialize(bytes, capacity: 512, rope: Self.rope)
        #expect(back.kind == "kivi4" && back.geometry.layers == 1..<2 && back.count(layer: 1) == 150)
        for h in 0..<2 {
            let (a, b) = (read(c, layer: 1, head: h), read(back, layer: 1, head: h))
            #expect(a.0 == b.0 && a.1 == b.1)
        }
        #expect(back.byteCount(layer: 1) == c.byteCount(layer: 1))
        #expect(throws: KVCacheError.self) { _ = try KIVICache.deserialize(Array(bytes.dropLast(1)), capacity: 512, rope: Self.rope) }
        #expect(throws: KVCacheError.self) { _ = try KIVICache.deserialize(bytes + [0], capacity: 512, rope: Self.rope) }
        #expect(throws: KVCacheError.self) { _ = try KIVICache.deserialize(bytes, capacity: 100, rope: Self.rope) }
        let dense = DenseKVCache<Float>(geometry: Self.geometry, rope: Self.rope)
        #expect(throws: KVCacheError.self) { _ = try KIVICache.deserialize(try dense.serialize(layers: 0..<1), capacity: 512, rope: Self.rope) }
        // Appending continues after a move.
        let more = Self.rows(40, seed: 13)
        try more.withUnsafeBufferPointer { try back.append(layer: 1, keys: $0.baseAddress!, values: $0.baseAddress!, count: 40) }
        #expect(back.count(layer: 1) == 190 && read(back, layer: 1, head: 0).0.count == 190 * Self.d)
    }

    @Test func truncateInsideQuantizedTokens() throws {
        let (c, _, _) = try Self.filled(bits: 2, window: 32, tokens: 150)
        let before = read(c, layer: 0, head: 1)
        c.truncate(to: 70)
        #expect(c.count(layer: 0) == 70 && c.count(layer: 1) == 70)
        let after = read(c, layer: 0, head: 1)
        #expect(after.0.count == 70 * Self.d)
        // Kept tokens read back as before, up to the fp16 rounding of the re-stored part.
        #expect(maxAbsDiff(after.0, Array(before.0[0..<70 * Self.d])) < 0.01)
        #expect(maxAbsDiff(after.1, Array(before.1[0..<70 * Self.d])) < 0.01)
    }

    @Test func parsesFromTheCommandLineName() throws {
        #expect(try KVCacheType(parsing: "kivi2") == .kivi(bits: 2))
        #expect(try KVCacheType(parsing: "KIVI4") == .kivi(bits: 4))
        #expect(throws: KVCacheError.unknownKind("kivi3")) { try KVCacheType(parsing: "kivi3") }
    }

    /// On the real model, KIVI-8 past its fp16 window changes the next-token logits
    /// only slightly, KIVI-2 more, and both keep fewer bytes than fp16.
    @Test(.enabled(if: RealAssets.available, "needs the SmolLM2 model (scripts/setup.sh)"))
    func realModelLogitsDegradeGracefully() throws {
        let model = try LlamaModel(path: RealAssets.model)
        let prompt: [Int32] = (0..<300).map { Int32(200 + ($0 * 7919) % 20000) }
        func run(_ t: KVCacheType) throws -> ([Float], Int) {
            let cache = model.makeCache(t, capacity: 512)
            var gen = TextGenerator(model: model)
            gen.prefillBatch = 64  // later chunks attend to earlier ones as stored
            let logits = try gen.prefill(prompt, cache: cache)
            return (logits, cache.byteCount)
        }
        let (ref, _) = try run(.fp32)
        let (half, halfBytes) = try run(.fp16)
        let (k8, k8Bytes) = try run(.kivi(bits: 8))
        let (k2, k2Bytes) = try run(.kivi(bits: 2))
        let e8 = maxAbsDiff(k8, ref), e2 = maxAbsDiff(k2, ref)
        #expect(e8 < 0.5, "kivi8 max logit difference \(e8)")
        #expect(e2 > e8)
        #expect(k2Bytes < k8Bytes && k8Bytes < halfBytes)
        #expect(maxAbsDiff(half, ref) < 0.1)
    }
}
