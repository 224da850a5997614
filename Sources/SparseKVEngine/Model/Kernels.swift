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
        var m = x[0]
        for i in 1..<count where x[i] > m { m = x[i] }
        var s: Float = 0
        for i in 0..<count {
            let e = expf(x[i] - m)
            x[i] = e
            s += e
        }
        let inv = 1 / s
        for i in 0..<count { x[i] *= inv }
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
