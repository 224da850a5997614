import SparseCoding

/// One session-layer's KV cache as the fused attention kernels read it: keys and values
/// of one KV head, a block of positions at a time, in the cache's own format.
///
/// Each cache type provides a source (its "format owner" for attention). Keys come out
/// rotated and fp32, decoded into a small caller-owned scratch (or pointing into the
/// cache's storage when it is already fp32). Values can be accumulated in a space of the
/// source's choosing: dense caches accumulate channels; the CSR cache accumulates
/// attention weight per dictionary atom and maps back to channels once at the end.
///
/// A source is read from several threads at once and must not change while it is read.
protocol AttentionSource {
    /// d, the channels of one head vector.
    var headDim: Int { get }

    /// Keys of KV head `g` at positions lo ..< hi, rotated, fp32: (hi - lo, d) row-major,
    /// either in `scratch` (room for `blockPositions` rows) or in the cache's storage.
    func keys(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>

    /// Scaled dot products of query rows with the rotated keys of KV head `g` at positions
    /// lo ..< hi: scores[r * stride + t - lo] = scale * queries[r] · K[t]. `scratch` has
    /// room for `blockPositions` rows. The default decodes key blocks with ``keys`` and
    /// dots them; a source can score straight from its own format.
    func scores(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>, rows: Int,
                scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int,
                scratch: UnsafeMutablePointer<Float>)

    /// Values of KV head `g` at positions lo ..< hi, fp32: (hi - lo, d), as for keys.
    func values(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>

    /// Floats of one query row's value accumulator (d for channel space).
    var accumulatorWidth: Int { get }

    /// acc (rows, accumulatorWidth) += p (rows, hi - lo; row stride `stride`) x V[lo ..< hi].
    func accumulate(head g: Int, _ lo: Int, _ hi: Int, weights p: UnsafePointer<Float>, stride: Int, rows: Int,
                    into acc: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)

    /// Row r of the output (d floats at out + r * outStride) from row r of `acc`, times `scale[r]`.
    func finish(head g: Int, acc: UnsafePointer<Float>, rows: Int, scale: UnsafePointer<Float>,
                into out: UnsafeMutablePointer<Float>, outStride: Int)
}

extension AttentionSource {
    /// Positions per decoded block: 64 rows of 64 channels are 16 KiB, well inside L1/L2.
    static var blockPositions: Int { FusedAttention.blockPositions }

    var accumulatorWidth: Int { headDim }

    func scores(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>, rows: Int,
                scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int,
                scratch: UnsafeMutablePointer<Float>) {
        scoresOfDecodedKeys(head: g, lo, hi, queries: queries, rows: rows, scale: scale, into: scores, stride: stride,
                            scratch: scratch)
    }

    /// ``scores`` through ``keys``: blocks of decoded keys, eight dot products at a time.
    func scoresOfDecodedKeys(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>,
                             rows: Int, scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int,
                             scratch: UnsafeMutablePointer<Float>) {
        let d = headDim
        var b0 = lo
        while b0 < hi {
            let b1 = min(hi, b0 + FusedAttention.blockPositions)
            let k = keys(head: g, b0, b1, scratch: scratch)
            for r in 0..<rows {
                let s = scores + r * stride - lo
                var t = b0
                while t < b1 {
                    let dots = dots8(queries[r], rows: k + (t - b0) * d, stride: d, count: b1 - t, dim: d) * scale
                    for j in 0..<min(8, b1 - t) { s[t + j] = dots[j] }
                    t += 8
                }
            }
            b0 = b1
        }
    }

    /// Channel-space accumulation: decode a block of values, then per query row a weighted
    /// sum of the block's rows held in registers.
    func accumulate(head g: Int, _ lo: Int, _ hi: Int, weights p: UnsafePointer<Float>, stride: Int, rows: Int,
                    into acc: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let d = headDim, b = FusedAttention.blockPositions
        var b0 = lo
        while b0 < hi {
            let b1 = min(hi, b0 + b)
            let v = values(head: g, b0, b1, scratch: scratch)
            for r in 0..<rows {
                Kernels.accumulateRows(weights: p + r * stride + b0 - lo, wStride: 1, rows: v, count: b1 - b0, dim: d,
                                       into: acc + r * d)
            }
            b0 = b1
        }
    }

    func finish(head g: Int, acc: UnsafePointer<Float>, rows: Int, scale: UnsafePointer<Float>,
                into out: UnsafeMutablePointer<Float>, outStride: Int) {
        let d = headDim
        for r in 0..<rows {
            let s = scale[r], a = acc + r * d, o = out + r * outStride
            for i in 0..<d { o[i] = a[i] * s }
        }
    }
}
