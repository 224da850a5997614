import Foundation

/// Small elementwise kernels of the forward pass. Pointers and counts in, no allocation.
enum Kernels {
    /// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], for each of `n` rows of `dim`.
    static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows n: Int, dim: Int,
                        eps: Float, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<n {
            let xr = x + r * dim, o = out + r * dim
            var ss: Float = 0
            for i in 0..<dim { ss += xr[i] * xr[i] }
            let scale = 1 / (ss / Float(dim) + eps).squareRoot()
            for i in 0..<dim { o[i] = xr[i] * scale * weight[i] }
        }
    }

    /// gate[i] = silu(gate[i]) * up[i]  (SwiGLU), in place on `gate`.
    static func swiGLU(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = gate[i]
            gate[i] = g / (1 + expf(-g)) * up[i]
        }
    }

    /// x += y
    static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { x[i] += y[i] }
    }

    /// In-place softmax of `count` values; returns nothing, values sum to 1.
    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        let s = expSubtract(x, count: count, max: maximum(x, count: count))
        scale(x, count: count, by: 1 / s)
    }

    /// `heads` queries (heads, dim) sharing one KV head, in one pass over K and V (each
    /// cached row is read once for the whole group instead of once per query head).
    /// `scores` needs room for heads * count floats; out is (heads, dim).
    static func attendGroup(queries q: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<Float>,
                            values: UnsafePointer<Float>, count: Int, dim: Int, scale: Float,
                            scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        for t in 0..<count {
            let k = keys + t * dim
            for h in 0..<heads { scores[h * count + t] = dot(q + h * dim, k, dim) * scale }
        }
        for h in 0..<heads { softmax(scores + h * count, count: count) }
        out.update(repeating: 0, count: heads * dim)
        for t in 0..<count {
            let v = values + t * dim
            for h in 0..<heads { axpy(scores[h * count + t], v, out + h * dim, dim) }
        }
    }

    /// Dot product with 4 independent 8-lane accumulators (float adds do not reassociate,
    /// so the compiler would not vectorize a plain loop).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        var i = 0
        while i + 32 <= n {
            s0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            s1 += ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            s2 += ra.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD8<Float>.self)
            s3 += ra.loadUnaligned(fromByteOffset: i * 4 + 96, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4 + 96, as: SIMD8<Float>.self)
            i += 32
        }
        var s = ((s0 + s1) + (s2 + s3)).sum()
        while i < n {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }

    /// y += a * x
    @inline(__always)
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let av = SIMD8<Float>(repeating: a)
        var i = 0
        while i + 8 <= n {
            let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                + av * rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }

    /// log(sum(exp(x))) computed stably.
    static func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var m = -Float.infinity
        for i in 0..<count where x[i] > m { m = x[i] }
        var s: Double = 0
        for i in 0..<count { s += Double(expf(x[i] - m)) }
        return m + Float(log(s))
    }
}
