/// Fused attention on a KIVI cache: keys and values are dequantized a block of positions
/// at a time, group by group, inside the kernel; the fp16 window is widened as it is read.
extension KIVICache {
    public func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) throws {
        try requireLayer(layer)
        let s = layer - geometry.layers.lowerBound
        let held = (0..<geometry.kvHeads).map { slots[s * geometry.kvHeads + $0] }
        // The slots' arrays are not changed while the kernel runs (appends and truncation
        // happen outside `attend`), so their storage stays where it is.
        let views = held.map { x in
            KIVISlotView(groups: x.groups, keyCodes: storageBase(x.keyCodes), keyParams: storageBase(x.keyParams),
                         valueCodes: storageBase(x.valueCodes), valueParams: storageBase(x.valueParams),
                         recentK: storageBase(x.recentK), recentV: storageBase(x.recentV))
        }
        let src = KIVIAttentionSource(slots: views, headDim: geometry.headDim, bits: bits)
        withExtendedLifetime(held) {
            fusedAttend(src, layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
        }
    }
}

/// The base address of an array's storage, for kernels that read it from several threads
/// while nothing changes it. Valid while the array lives unmodified.
func storageBase<T>(_ a: [T]) -> UnsafePointer<T> {
    a.withUnsafeBufferPointer { UnsafePointer($0.baseAddress ?? UnsafePointer(bitPattern: MemoryLayout<T>.alignment)!) }
}

/// One KIVI (layer, KV head) as raw storage.
struct KIVISlotView {
    let groups: Int
    let keyCodes: UnsafePointer<UInt8>, keyParams: UnsafePointer<Float16>
    let valueCodes: UnsafePointer<UInt8>, valueParams: UnsafePointer<Float16>
    let recentK: UnsafePointer<Float16>, recentV: UnsafePointer<Float16>
}

struct KIVIAttentionSource: AttentionSource {
    let slots: [KIVISlotView]
    let headDim: Int
    let bits: Int

    func keys(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let x = slots[g], d = headDim, gs = KIVICache.group
        let quantized = x.groups * gs, groupBytes = gs * d * bits / 8, rowBytes = d * bits / 8
        var t = lo
        while t < min(hi, quantized) {
            // One group's per-channel scales and minimums, widened once for its tokens.
            let grp = t / gs, end = min(hi, (grp + 1) * gs)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * d) { p in
                Kernels.widen(x.keyParams + grp * 2 * d, count: 2 * d, into: p.baseAddress!)
                let sc = p.baseAddress!, mn = sc + d, codes = x.keyCodes + grp * groupBytes
                for u in t..<end {
                    let o = scratch + (u - lo) * d
                    KIVICodes.unpack(codes + (u - grp * gs) * rowBytes, count: d, bits: bits, into: o)
                    KIVICodes.affine(o, count: d, scale: sc, offset: mn)
                }
            }
            t = end
        }
        if t < hi { Kernels.widen(x.recentK + (t - quantized) * d, count: (hi - t) * d, into: scratch + (t - lo) * d) }
        return UnsafePointer(scratch)
    }

    func values(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let x = slots[g], d = headDim, gs = KIVICache.group, vg = d / gs
        let quantized = x.groups * gs, rowBytes = d * bits / 8
        let end = min(hi, quantized)
        if lo < end {
            for t in lo..<end {
                let p = x.valueParams + t * 2 * vg, o = scratch + (t - lo) * d
                KIVICodes.unpack(x.valueCodes + t * rowBytes, count: d, bits: bits, into: o)
                // Per group of channels: one scale (p[j]) and minimum (p[vg + j]).
                for j in 0..<vg { KIVICodes.affine(o + j * gs, count: gs, scale: Float(p[j]), offset: Float(p[vg + j])) }
            }
        }
        let t = max(lo, quantized)
        if t < hi { Kernels.widen(x.recentV + (t - quantized) * d, count: (hi - t) * d, into: scratch + (t - lo) * d) }
        return UnsafePointer(scratch)
    }
}
