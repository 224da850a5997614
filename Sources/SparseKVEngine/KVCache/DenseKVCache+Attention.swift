/// Fused attention on a dense cache: fp32 rows are read in place, fp16 rows are widened a
/// block at a time (F16C) inside the kernel, never a whole layer.
extension DenseKVCache {
    public func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) throws {
        try requireLayer(layer)
        let slots = (0..<geometry.kvHeads).map { rows(layer: layer, kvHead: $0) }
        let src = DenseAttentionSource<Element>(keys: slots.map(\.keys), values: slots.map(\.values),
                                                headDim: geometry.headDim, rope: rotateOnRead ? rope : nil)
        fusedAttend(src, layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
    }
}

/// A dense cache's rows of one layer, per KV head.
struct DenseAttentionSource<Element: DenseKVElement>: AttentionSource {
    /// [kvHead]: (count, d)
    let keys: [UnsafeBufferPointer<Element>]
    let values: [UnsafeBufferPointer<Element>]
    let headDim: Int
    /// Set when keys are stored pre-RoPE and must be rotated as they are read.
    let rope: RoPE?

    func keys(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let p = rows(keys[g], lo, hi, scratch)
        guard let rope else { return p }
        for t in lo..<hi { rope.apply(scratch + (t - lo) * headDim, heads: 1, position: t) }
        return UnsafePointer(scratch)
    }

    func values(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        rows(values[g], lo, hi, scratch)
    }

    /// Rows lo ..< hi as fp32: in place for fp32 (unless they must be rotated), widened
    /// into `scratch` for fp16. (A software prefetch of the next block measured the same as
    /// none for fp16 attention at 4,096 tokens: the hardware prefetcher follows these reads.)
    @inline(__always)
    private func rows(_ held: UnsafeBufferPointer<Element>, _ lo: Int, _ hi: Int,
                      _ scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        guard let base = held.baseAddress else { return UnsafePointer(scratch) }
        let src = base + lo * headDim, count = (hi - lo) * headDim
        if Element.self == Float.self {
            let f = UnsafeRawPointer(src).assumingMemoryBound(to: Float.self)
            guard rope != nil else { return f }
            scratch.update(from: f, count: count)
            return UnsafePointer(scratch)
        }
        Kernels.widen(UnsafeRawPointer(src).assumingMemoryBound(to: Float16.self), count: count, into: scratch)
        return UnsafePointer(scratch)
    }
}
