/// KIVI (Liu et al., 2024), the quantized-cache baseline the CSR paper compares against.
///
/// Keys are quantized per channel over groups of 32 tokens, values per token over
/// groups of 32 channels, both asymmetric with `bits` bits and an fp16 scale and minimum
/// per group; the most recent `window` tokens stay in fp16. When the fp16 part reaches
/// window + 32 tokens its oldest 32 are quantized. Keys are stored rotated, as KIVI
/// quantizes the cache that attention reads. Every stored byte is counted.
///
/// As in KIVI, a batch of new tokens (a prompt chunk) attends to itself in fp16: the
/// fp16 part is brought back to the window when the next tokens arrive, not before.
public final class KIVICache: KVCache {
    public static let group = 32
    /// Code widths KIVI is built with.
    public static let supportedBits = [2, 4, 8]

    public let geometry: KVCacheGeometry
    public let rope: RoPE
    public let bits: Int
    public let window: Int
    public var kind: String { Self.kind(bits: bits) }

    /// "kivi2", "kivi4" or "kivi8".
    static func kind(bits: Int) -> String { "kivi\(bits)" }

    /// One (layer, KV head).
    final class Slot {
        /// Quantized groups of 32 tokens.
        var groups = 0
        /// Per group: (32 * headDim) codes, token-major, `bits` each, packed LSB first.
        var keyCodes: [UInt8] = []
        /// Per group: headDim scales, then headDim minimums (one per channel).
        var keyParams: [Float16] = []
        /// Per token of the quantized groups: headDim codes packed.
        var valueCodes: [UInt8] = []
        /// Per token: (headDim / 32) scales, then as many minimums.
        var valueParams: [Float16] = []
        /// (tokens, headDim) the fp16 window, keys rotated
        var recentK: [Float16] = []
        var recentV: [Float16] = []
    }

    var slots: [Slot]
    var counts: [Int]
    private var keyScratch: [Float] = []
    private var valueScratch: [Float] = []

    public init(geometry: KVCacheGeometry, rope: RoPE, bits: Int, window: Int = 128) {
        precondition(Self.supportedBits.contains(bits), "KIVI bits must be 2, 4 or 8")
        precondition(geometry.headDim % Self.group == 0, "KIVI needs a head dim that is a multiple of 32")
        self.geometry = geometry
        self.rope = rope
        self.bits = bits
        self.window = window
        slots = (0..<geometry.layers.count * geometry.kvHeads).map { _ in Slot() }
        counts = Array(repeating: 0, count: geometry.layers.count)
    }

    public func count(layer: Int) -> Int {
        geometry.layers.contains(layer) ? counts[layer - geometry.layers.lowerBound] : 0
    }

    // MARK: - Writing

    public func append(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, count n: Int) throws {
        guard geometry.layers.contains(layer) else { throw KVCacheError.layerOutOfRange(layer: layer, layers: geometry.layers) }
        let s = layer - geometry.layers.lowerBound
        let start = counts[s], d = geometry.headDim, width = geometry.rowWidth
        guard start + n <= geometry.capacity else {
            throw KVCacheError.full(layer: layer, capacity: geometry.capacity, needed: start + n)
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n * d) { rows in
            withUnsafeTemporaryAllocation(of: Float16.self, capacity: n * d) { halves in
                let x = rows.baseAddress!, h16 = halves.baseAddress!
                for h in 0..<geometry.kvHeads {
                    let slot = slots[s * geometry.kvHeads + h]
                    quantizeOldestGroups(slot, count: settlingGroups(slot))
                    for t in 0..<n {
                        (x + t * d).update(from: k + t * width + h * d, count: d)
                        rope.apply(x + t * d, heads: 1, position: start + t)
                    }
                    for i in 0..<n * d { h16[i] = Float16(x[i]) }
                    slot.recentK.append(contentsOf: UnsafeBufferPointer(start: h16, count: n * d))
                    for t in 0..<n {
                        for i in 0..<d { h16[t * d + i] = Float16(v[t * width + h * d + i]) }
                    }
                    slot.recentV.append(contentsOf: UnsafeBufferPointer(start: h16, count: n * d))
                }
            }
        }
        counts[s] = start + n
    }

    /// Asymmetric quantization parameters of a group whose values span lo ... hi: fp16
    /// scale and minimum.
    static func params(lo: Float, hi: Float, bits: Int) -> (scale: Float16, zero: Float16) {
        (Float16((hi - lo) / Float((1 << bits) - 1)), Float16(lo))
    }

    /// Groups the window holds beyond its bound (window + 32 tokens or more): what the next
    /// append quantizes first.
    func settlingGroups(_ slot: Slot) -> Int {
        max(0, (slot.recentK.count / geometry.headDim - window) / Self.group)
    }

    /// Quantizes the oldest `count` groups of 32 tokens of the fp16 window, then drops them
    /// from it at once. Works on raw storage: after a prompt batch (512 tokens) the next
    /// append quantizes all of it but the window, 12 groups per head, in one decode step, and
    /// a shift of the window per group would cost as much as the batch each time.
    func quantizeOldestGroups(_ slot: Slot, count: Int) {
        guard count > 0 else { return }
        let d = geometry.headDim, g = Self.group, bits = self.bits, vg = d / g
        let groupBytes = g * d * bits / 8, rowBytes = d * bits / 8
        let codeBase = slot.keyCodes.count, keyParamBase = slot.keyParams.count
        let valueCodeBase = slot.valueCodes.count, valueParamBase = slot.valueParams.count
        slot.keyCodes.append(contentsOf: repeatElement(0, count: count * groupBytes))
        slot.keyParams.append(contentsOf: repeatElement(0, count: count * 2 * d))
        slot.valueCodes.append(contentsOf: repeatElement(0, count: count * groupBytes))
        slot.valueParams.append(contentsOf: repeatElement(0, count: count * g * 2 * vg))
        // x: a group's rows; params: per channel (keys) or per value of a block (values), the
        // widened scales then minimums.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: g * d + 2 * d) { xs in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: g * d) { cs in
                let x = xs.baseAddress!, params = x + g * d, codes = cs.baseAddress!
                for j in 0..<count {
                    // Keys: one (scale, min) per channel over the 32 tokens.
                    slot.recentK.withUnsafeBufferPointer { Kernels.widen($0.baseAddress! + j * g * d, count: g * d, into: x) }
                    slot.keyParams.withUnsafeMutableBufferPointer { kp in
                        let p = UnsafeMutableRawPointer(kp.baseAddress! + keyParamBase + j * 2 * d)
                        let xr = UnsafeRawPointer(x)
                        // 16 channels at a time, each lane's minimum and maximum kept as Swift.min and
                        // Swift.max keep them (the earlier of equal values, the later).
                        for c in stride(from: 0, to: d, by: 16) {
                            var lo = xr.loadUnaligned(fromByteOffset: c * 4, as: SIMD16<Float>.self), hi = lo
                            for t in 1..<g {
                                let v = xr.loadUnaligned(fromByteOffset: (t * d + c) * 4, as: SIMD16<Float>.self)
                                lo.replace(with: v, where: v .< lo)
                                hi.replace(with: v, where: v .>= hi)
                            }
                            let scale = SIMD16<Float16>((hi - lo) / Float((1 << bits) - 1)), zero = SIMD16<Float16>(lo)
                            p.storeBytes(of: scale, toByteOffset: c * 2, as: SIMD16<Float16>.self)
                            p.storeBytes(of: zero, toByteOffset: (d + c) * 2, as: SIMD16<Float16>.self)
                            UnsafeMutableRawPointer(params).storeBytes(of: SIMD16<Float>(scale), toByteOffset: c * 4,
                                                                       as: SIMD16<Float>.self)
                            UnsafeMutableRawPointer(params).storeBytes(of: SIMD16<Float>(zero), toByteOffset: (d + c) * 4,
                                                                       as: SIMD16<Float>.self)
                        }
                        for t in 0..<g {
                            KIVICodes.codes(x + t * d, scale: params, zero: params + d, count: d, bits: bits, into: codes + t * d)
                        }
                    }
                    slot.keyCodes.withUnsafeMutableBufferPointer {
                        KIVICodes.pack(codes, count: g * d, bits: bits, into: $0.baseAddress! + codeBase + j * groupBytes)
                    }
                    // Values: one (scale, min) per 32 channels of each token.
                    slot.recentV.withUnsafeBufferPointer { Kernels.widen($0.baseAddress! + j * g * d, count: g * d, into: x) }
                    slot.valueParams.withUnsafeMutableBufferPointer { vp in
                        for t in 0..<g {
                            let p = vp.baseAddress! + valueParamBase + (j * g + t) * 2 * vg
                            for b in 0..<vg {
                                let row = x + t * d + b * g
                                var lo = row[0], hi = row[0]
                                for i in 1..<g { lo = min(lo, row[i]); hi = max(hi, row[i]) }
                                let q = Self.params(lo: lo, hi: hi, bits: bits)
                                p[b] = q.scale
                                p[vg + b] = q.zero
                                params.update(repeating: Float(q.scale), count: g)
                                (params + g).update(repeating: Float(q.zero), count: g)
                                KIVICodes.codes(row, scale: params, zero: params + g, count: g, bits: bits, into: codes + t * d + b * g)
                            }
                        }
                    }
                    slot.valueCodes.withUnsafeMutableBufferPointer {
                        KIVICodes.pack(codes, count: g * d, bits: bits, into: $0.baseAddress! + valueCodeBase + j * g * rowBytes)
                    }
                }
            }
        }
        slot.recentK.removeFirst(count * g * d)
        slot.recentV.removeFirst(count * g * d)
        slot.groups += count
    }

    // MARK: - Reading

    /// Every token of a slot as fp32: (tokens, headDim) keys and values.
    func decode(_ slot: Slot, keys: inout [Float], values: inout [Float]) {
        let d = geometry.headDim, g = Self.group
        let quantized = slot.groups * g
        keys = [Float](repeating: 0, count: quantized * d + slot.recentK.count)
        values = keys
        let keyGroupBytes = g * d * bits / 8, valueRowBytes = d * bits / 8, vg = d / g
        slot.keyCodes.withUnsafeBufferPointer { kc in
            slot.valueCodes.withUnsafeBufferPointer { vc in
                for grp in 0..<slot.groups {
                    let codes = UnsafeBufferPointer(rebasing: kc[grp * keyGroupBytes..<(grp + 1) * keyGroupBytes])
                    let p = grp * 2 * d
                    for t in 0..<g {
                        for c in 0..<d {
                            let q = Float(KIVICodes.code(codes, at: t * d + c, bits: bits))
                            keys[(grp * g + t) * d + c] = Float(slot.keyParams[p + d + c]) + Float(slot.keyParams[p + c]) * q
                        }
                    }
                }
                for t in 0..<quantized {
                    let codes = UnsafeBufferPointer(rebasing: vc[t * valueRowBytes..<(t + 1) * valueRowBytes])
                    let p = t * 2 * vg
                    for c in 0..<d {
                        let q = Float(KIVICodes.code(codes, at: c, bits: bits))
                        values[t * d + c] = Float(slot.valueParams[p + vg + c / g]) + Float(slot.valueParams[p + c / g]) * q
                    }
                }
            }
        }
        for i in 0..<slot.recentK.count {
            keys[quantized * d + i] = Float(slot.recentK[i])
            values[quantized * d + i] = Float(slot.recentV[i])
        }
    }

    public func withKeysAndValues<R>(
        layer: Int, kvHead: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int) throws -> R
    ) rethrows -> R {
        let s = layer - geometry.layers.lowerBound
        decode(slots[s * geometry.kvHeads + kvHead], keys: &keyScratch, values: &valueScratch)
        return try keyScratch.withUnsafeBufferPointer { kb in
            try valueScratch.withUnsafeBufferPointer { vb in try body(kb.baseAddress!, vb.baseAddress!, counts[s]) }
        }
    }

    public func byteCount(layer: Int) -> Int {
        guard geometry.layers.contains(layer) else { return 0 }
        let s = layer - geometry.layers.lowerBound
        return (0..<geometry.kvHeads).reduce(0) { acc, h in
            let x = slots[s * geometry.kvHeads + h]
            return acc + x.keyCodes.count + x.valueCodes.count
                + 2 * (x.keyParams.count + x.valueParams.count + x.recentK.count + x.recentV.count)
        }
    }

    /// Cutting inside quantized tokens turns the kept part of the cut group back into
    /// fp16 rows (as decoded), so later appends go on from exactly `count` tokens.
    public func truncate(to count: Int) {
        let d = geometry.headDim, g = Self.group
        let count = max(0, count)
        for s in counts.indices where counts[s] > count {
            for h in 0..<geometry.kvHeads {
                let slot = slots[s * geometry.kvHeads + h]
                if count >= slot.groups * g {
                    let keep = (count - slot.groups * g) * d
                    slot.recentK.removeLast(slot.recentK.count - keep)
                    slot.recentV.removeLast(slot.recentV.count - keep)
                    continue
                }
                var k: [Float] = [], v: [Float] = []
                decode(slot, keys: &k, values: &v)
                let keepGroups = count / g
                slot.keyCodes.removeLast((slot.groups - keepGroups) * g * d * bits / 8)
                slot.keyParams.removeLast((slot.groups - keepGroups) * 2 * d)
                slot.valueCodes.removeLast((slot.groups - keepGroups) * g * d * bits / 8)
                slot.valueParams.removeLast((slot.groups - keepGroups) * g * 2 * (d / g))
                slot.groups = keepGroups
                slot.recentK = k[keepGroups * g * d..<count * d].map { Float16($0) }
                slot.recentV = v[keepGroups * g * d..<count * d].map { Float16($0) }
            }
            counts[s] = count
        }
    }

    // MARK: - Transfer format

    /// Quantizes first what the next append would (the window back to its bound): a
    /// transfer then carries the cache as it settles, not a prompt chunk's fp16 rows, and
    /// both ends go on exactly as this cache would have.
    public func serialize(layers: Range<Int>) throws -> [UInt8] {
        let n = try transferTokenCount(layers: layers)
        let d = geometry.headDim
        for layer in layers {
            for h in 0..<geometry.kvHeads {
                let slot = slots[(layer - geometry.layers.lowerBound) * geometry.kvHeads + h]
                quantizeOldestGroups(slot, count: settlingGroups(slot))
            }
        }
        var w = BinaryWriter(capacity: 64 + layers.reduce(0) { $0 + byteCount(layer: $1) } + 16 * layers.count * geometry.kvHeads)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: n, keysRotated: true).write(to: &w)
        w.write(UInt32(window))
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for h in 0..<geometry.kvHeads {
                let x = slots[s * geometry.kvHeads + h]
                w.write(UInt32(x.groups))
                w.write(array: x.keyCodes)
                w.write(array: x.keyParams)
                w.write(array: x.valueCodes)
                w.write(array: x.valueParams)
                w.write(array: x.recentK)
                w.write(array: x.recentV)
            }
        }
        return w.bytes
    }

    /// Rebuilds a cache from `serialize` output; every length is checked against the header.
    public static func deserialize(_ bytes: [UInt8], capacity: Int, rope: RoPE) throws -> KIVICache {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard let bits = supportedBits.first(where: { kind(bits: $0) == h.kind }) else {
                throw KVCacheError.incompatiblePayload("payload is '\(h.kind)', not a KIVI cache")
            }
            guard h.headDim == rope.headDim, h.headDim % group == 0 else {
                throw KVCacheError.incompatiblePayload("payload head dim \(h.headDim), model head dim \(rope.headDim)")
            }
            guard h.tokenCount <= capacity else { throw KVCacheError.full(layer: h.layers.lowerBound, capacity: capacity, needed: h.tokenCount) }
            do {
                let window = Int(try r.read(UInt32.self, "window"))
                guard window <= KVPayloadHeader.maxTokens else { throw KVCacheError.malformedPayload("window \(window)") }
                let cache = KIVICache(
                    geometry: KVCacheGeometry(layers: h.layers, kvHeads: h.kvHeads, headDim: h.headDim, capacity: capacity),
                    rope: rope, bits: bits, window: window)
                let d = h.headDim
                for i in 0..<h.layers.count * h.kvHeads {
                    let x = cache.slots[i]
                    let groups = Int(try r.read(UInt32.self, "groups"))
                    guard groups * group <= h.tokenCount else { throw KVCacheError.malformedPayload("\(groups) groups for \(h.tokenCount) tokens") }
                    let quantized = groups * group, recent = h.tokenCount - quantized
                    x.groups = groups
                    x.keyCodes = try r.readArray(UInt8.self, count: quantized * d * bits / 8, "key codes")
                    x.keyParams = try r.readArray(Float16.self, count: groups * 2 * d, "key scales")
                    x.valueCodes = try r.readArray(UInt8.self, count: quantized * d * bits / 8, "value codes")
                    x.valueParams = try r.readArray(Float16.self, count: quantized * 2 * (d / group), "value scales")
                    x.recentK = try r.readArray(Float16.self, count: recent * d, "recent keys")
                    x.recentV = try r.readArray(Float16.self, count: recent * d, "recent values")
                }
                guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
                for s in cache.counts.indices { cache.counts[s] = h.tokenCount }
                return cache
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
        }
    }
}
