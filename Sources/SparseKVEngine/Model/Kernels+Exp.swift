/// Vectorized exponentials for softmax: 16 lanes at a time, about 1 ulp, with no libm call.
extension Kernels {
    /// e^x for 16 lanes: x = k ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 Taylor
    /// polynomial (relative error < 2e-7), 2^k built in the exponent bits. Inputs below
    /// -80 give exactly 0: softmax weights under e^-80 (1.8e-35) change nothing, while
    /// subnormal results would cost a microcode assist in every later product on Intel
    /// CPUs (that made prefill's softmax 10x slower). Softmax only exponentiates
    /// x - max <= 0; inputs are capped at 88.
    @inline(__always)
    static func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
        let tiny = x .< -80
        let xc = x.replacing(with: -80, where: tiny).replacing(with: 88, where: x .> 88)
        // Rounding by adding 1.5 * 2^23 leaves k in the low mantissa bits (ties to even).
        let magic = SIMD16<Float>(repeating: 12_582_912)
        let kf = xc * 1.442_695_04 + magic
        let k = unsafeBitCast(kf, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let kr = kf - magic
        // ln 2 split so that kr * hi is exact.
        let r = (xc - kr * 0.693_145_75) - kr * 1.428_606_8e-6
        var p = SIMD16<Float>(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let scale = unsafeBitCast((k &+ 127) &<< 23, to: SIMD16<Float>.self)
        return (p * scale).replacing(with: 0, where: tiny)
    }

    /// e^x for one value, by the same method as `exp16`.
    @inline(__always)
    static func exp(_ x: Float) -> Float { exp16(SIMD16(repeating: x))[0] }

    /// The largest of `count` values (-inf for none).
    static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var m16 = SIMD16<Float>(repeating: -.infinity)
        let raw = UnsafeRawPointer(x)
        var i = 0
        while i + 16 <= count {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            m16 = m16.replacing(with: v, where: v .> m16)
            i += 16
        }
        var m = m16.max()
        while i < count {
            if x[i] > m { m = x[i] }
            i += 1
        }
        return m
    }

    /// x[i] = e^(x[i] - max) in place; returns the sum of the new values.
    static func expSubtract(_ x: UnsafeMutablePointer<Float>, count: Int, max: Float) -> Float {
        let raw = UnsafeMutableRawPointer(x), mv = SIMD16<Float>(repeating: max)
        var s16 = SIMD16<Float>()
        var i = 0
        while i + 16 <= count {
            let e = exp16(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - mv)
            raw.storeBytes(of: e, toByteOffset: i * 4, as: SIMD16<Float>.self)
            s16 += e
            i += 16
        }
        if i < count {
            var tail = SIMD16<Float>(repeating: -.infinity)
            for j in i..<count { tail[j - i] = x[j] }
            let e = exp16(tail - mv)
            for j in i..<count { x[j] = e[j - i] }
            s16 += e
        }
        return s16.sum()
    }

    /// x *= a for `count` values.
    static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by a: Float) {
        let raw = UnsafeMutableRawPointer(x), av = SIMD16<Float>(repeating: a)
        var i = 0
        while i + 16 <= count {
            raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * av,
                           toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            x[i] *= a
            i += 1
        }
    }
}

extension Kernels {
    /// fp16 to fp32, 16 values at a time (one `vcvtph2ps` per 8 with F16C).
    static func widen(_ x: UnsafePointer<Float16>, count: Int, into y: UnsafeMutablePointer<Float>) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 16 <= count {
            let h = rx.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<Float16>.self)
            ry.storeBytes(of: SIMD16<Float>(h), toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            y[i] = Float(x[i])
            i += 1
        }
    }
}

// MARK: - Register-accumulated sums of rows

extension Kernels {
    /// acc (dim) += sum over t < count of weight(t) * row(t) (dim floats each), one fused
    /// multiply-add per product, the sum held in registers for dim 32 or 64 (an axpy per row would store and reload acc every
    /// time, a chain of store-to-load latencies), plain axpys otherwise.
    @inline(__always)
    private static func weightedSum(count: Int, dim: Int, into acc: UnsafeMutablePointer<Float>, fromZero: Bool,
                                    weight: (Int) -> Float, row: (Int) -> UnsafePointer<Float>) {
        let ra = UnsafeMutableRawPointer(acc)
        guard dim == 64 || dim == 32 else {
            if fromZero { acc.update(repeating: 0, count: dim) }
            for t in 0..<count { axpy(weight(t), row(t), acc, dim) }
            return
        }
        let wide = dim == 64
        @inline(__always) func start(_ offset: Int) -> SIMD16<Float> {
            fromZero ? SIMD16<Float>() : ra.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        }
        var a0 = start(0), a1 = start(64)
        var a2 = wide ? start(128) : SIMD16<Float>(), a3 = wide ? start(192) : SIMD16<Float>()
        for t in 0..<count {
            let c = SIMD16<Float>(repeating: weight(t)), p = UnsafeRawPointer(row(t))
            a0.addProduct(c, p.loadUnaligned(as: SIMD16<Float>.self))
            a1.addProduct(c, p.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self))
            if wide {
                a2.addProduct(c, p.loadUnaligned(fromByteOffset: 128, as: SIMD16<Float>.self))
                a3.addProduct(c, p.loadUnaligned(fromByteOffset: 192, as: SIMD16<Float>.self))
            }
        }
        ra.storeBytes(of: a0, as: SIMD16<Float>.self)
        ra.storeBytes(of: a1, toByteOffset: 64, as: SIMD16<Float>.self)
        if wide {
            ra.storeBytes(of: a2, toByteOffset: 128, as: SIMD16<Float>.self)
            ra.storeBytes(of: a3, toByteOffset: 192, as: SIMD16<Float>.self)
        }
    }

    /// acc (dim) += sum over t of w[t * wStride] * x[t * dim ..< (t + 1) * dim].
    @inline(__always)
    static func accumulateRows(weights w: UnsafePointer<Float>, wStride: Int, rows x: UnsafePointer<Float>, count: Int,
                               dim: Int, into acc: UnsafeMutablePointer<Float>) {
        weightedSum(count: count, dim: dim, into: acc, fromZero: false, weight: { w[$0 * wStride] }, row: { x + $0 * dim })
    }

    /// out (dim) = sum over t < count of weight(t) * row(t): a sparse code's reconstruction
    /// with its pairs read as the sum goes (no unpacking pass).
    @inline(__always)
    static func sumOfRows(count: Int, dim: Int, into out: UnsafeMutablePointer<Float>,
                          weight: (Int) -> Float, row: (Int) -> UnsafePointer<Float>) {
        weightedSum(count: count, dim: dim, into: out, fromZero: true, weight: weight, row: row)
    }

    /// The weighted sum of fp16 rows: acc (dim) (+)= sum over t < count of w[t] * rows[j_t]
    /// widened, j_t = indices[t] (or t without indices). Half the bytes of fp32 rows to
    /// gather, one `vcvtph2ps` per 8 values.
    @inline(__always)
    static func sumOfHalfRows(count: Int, dim: Int, weights w: UnsafePointer<Float>, rows: UnsafePointer<Float16>,
                              indices: UnsafePointer<Int32>?, into acc: UnsafeMutablePointer<Float>, fromZero: Bool) {
        switch dim {
        case 64:
            // Two 32-channel halves: each lane's sum is the same, the halves of a row stay in L1.
            halfRows32(count: count, weights: w, rows: rows, rowStride: 64, indices: indices, into: acc, fromZero: fromZero)
            halfRows32(count: count, weights: w, rows: rows + 32, rowStride: 64, indices: indices, into: acc + 32,
                       fromZero: fromZero)
        case 32:
            halfRows32(count: count, weights: w, rows: rows, rowStride: 32, indices: indices, into: acc, fromZero: fromZero)
        default:
            if fromZero { acc.update(repeating: 0, count: dim) }
            for t in 0..<count {
                let x = rows + (indices.map { Int($0[t]) } ?? t) * dim, c = w[t]
                for i in 0..<dim { acc[i] += c * Float(x[i]) }
            }
        }
    }

    // 8 lanes at a time: `SIMD8<Float>(SIMD8<Float16>)` becomes one `vcvtph2ps`, while the
    // 16-lane conversion is left as a call to the generic one.

    @inline(never)
    private static func halfRows32(count: Int, weights w: UnsafePointer<Float>, rows: UnsafePointer<Float16>, rowStride: Int,
                                   indices j: UnsafePointer<Int32>?, into acc: UnsafeMutablePointer<Float>, fromZero: Bool) {
        let ra = UnsafeMutableRawPointer(acc)
        @inline(__always) func load(_ i: Int) -> SIMD8<Float> {
            fromZero ? SIMD8() : ra.loadUnaligned(fromByteOffset: i * 32, as: SIMD8<Float>.self)
        }
        var a0 = load(0), a1 = load(1), a2 = load(2), a3 = load(3)
        for t in 0..<count {
            let c = SIMD8<Float>(repeating: w[t]), p = UnsafeRawPointer(rows + (j.map { Int($0[t]) } ?? t) * rowStride)
            @inline(__always) func row(_ i: Int) -> SIMD8<Float> {
                SIMD8<Float>(p.loadUnaligned(fromByteOffset: i * 16, as: SIMD8<Float16>.self))
            }
            a0.addProduct(c, row(0))
            a1.addProduct(c, row(1))
            a2.addProduct(c, row(2))
            a3.addProduct(c, row(3))
        }
        ra.storeBytes(of: a0, as: SIMD8<Float>.self)
        ra.storeBytes(of: a1, toByteOffset: 32, as: SIMD8<Float>.self)
        ra.storeBytes(of: a2, toByteOffset: 64, as: SIMD8<Float>.self)
        ra.storeBytes(of: a3, toByteOffset: 96, as: SIMD8<Float>.self)
    }
}
