#if !(arch(x86_64) && SPARSEKV_AVX2)
/// The matrix-vector kernels for builds without AVX2 (`SPARSEKV_TARGET_CPU=x86-64`, or
/// other architectures), in Swift SIMD types only. QuantizedMatrix+AVX2.swift has the
/// kernels the default build uses; both give bit-identical results.
extension QuantizedMatrix {
    @inline(never)
    static func quantizeInput(_ x: UnsafePointer<Float>, blocks nb: Int, into out: Input) {
        out.multipliers[0] = SIMD8(repeating: 4096)
        out.multipliers[1] = SIMD8(repeating: 256)
        out.multipliers[2] = SIMD8(repeating: 16)
        for b in 0..<nb {
            let r = roundBlock(x, b, into: out)
            let q = SIMD32<Int16>(lowHalf: SIMD16(lowHalf: r.0, highHalf: r.1), highHalf: SIMD16(lowHalf: r.2, highHalf: r.3))
            let even = q.evenHalf, odd = q.oddHalf
            out.q[4 * b] = even.lowHalf
            out.q[4 * b + 1] = even.highHalf
            out.q[4 * b + 2] = odd.lowHalf
            out.q[4 * b + 3] = odd.highHalf
        }
    }

    // MARK: - Row kernels

    /// One Q4_1 row: sum over blocks of d * (q . xq) * xscale + m * sum(x).
    @inline(__always)
    static func rowQ4_1(_ row: UnsafeRawPointer, _ nb: Int, _ x: Input) -> Float {
        let k = (x.multipliers[0], x.multipliers[1], x.multipliers[2])
        var acc = SIMD4<Float>(), offsets = SIMD4<Float>()
        var b = 0
        // Four blocks at a time so their scales convert and multiply as one vector.
        while b + 4 <= nb {
            let p = row + b * 20
            let dm = gather4(p, stride: 20)  // d in the low half, m in the high half
            let d = highHalfToFloat(dm &<< 16), m = highHalfToFloat(dm)
            let s = reduce4(dotQ4_1(p + 4, x.q + 4 * b, k), dotQ4_1(p + 24, x.q + 4 * b + 4, k),
                            dotQ4_1(p + 44, x.q + 4 * b + 8, k), dotQ4_1(p + 64, x.q + 4 * b + 12, k))
            acc += SIMD4<Float>(s) * d * load4(x.scale + b)
            offsets += m * load4(x.sum + b)
            b += 4
        }
        var tail: Float = 0
        while b < nb {
            let p = row + b * 20
            let s = Float(dotQ4_1(p + 4, x.q + 4 * b, k).wrappedSum())
            tail += s * half(p) * x.scale[b] + half(p + 2) * x.sum[b]
            b += 1
        }
        return (acc + offsets).sum() + tail
    }

    /// One Q8_0 row: sum over blocks of d * (q . xq) * xscale.
    @inline(__always)
    static func rowQ8_0(_ row: UnsafeRawPointer, _ nb: Int, _ x: Input) -> Float {
        let k = x.multipliers[1]
        var acc = SIMD4<Float>()
        var b = 0
        while b + 4 <= nb {
            let p = row + b * 34
            let d = highHalfToFloat(gather4(p, stride: 34) &<< 16)
            let s = reduce4(dotQ8_0(p + 2, x.q + 4 * b, k), dotQ8_0(p + 36, x.q + 4 * b + 4, k),
                            dotQ8_0(p + 70, x.q + 4 * b + 8, k), dotQ8_0(p + 104, x.q + 4 * b + 12, k))
            acc += SIMD4<Float>(s) * d * load4(x.scale + b)
            b += 4
        }
        var tail: Float = 0
        while b < nb {
            let p = row + b * 34
            tail += Float(dotQ8_0(p + 2, x.q + 4 * b, k).wrappedSum()) * half(p) * x.scale[b]
            b += 1
        }
        return acc.sum() + tail
    }

    // MARK: - Block dot products

    /// 16 nibble bytes . one block of xq, as four partial Int32 sums. Read as 8 UInt16
    /// lanes, lane i holds bytes 2i and 2i+1, so its four nibbles are elements 2i, 2i+16,
    /// 2i+1, 2i+17, the even/odd order of `Input.q`. Multiplying by 4096, 256 or 16
    /// moves a nibble to the top and a logical shift by 12 brings it down alone.
    @inline(__always)
    static func dotQ4_1(_ qs: UnsafeRawPointer, _ x: UnsafePointer<SIMD8<Int16>>,
                        _ k: (SIMD8<Int16>, SIMD8<Int16>, SIMD8<Int16>)) -> SIMD4<Int32> {
        let v = qs.loadUnaligned(as: SIMD8<UInt16>.self)
        @inline(__always) func nibble(_ u: SIMD8<UInt16>) -> SIMD8<Int16> { unsafeBitCast(u &>> 12, to: SIMD8<Int16>.self) }
        @inline(__always) func times(_ m: SIMD8<Int16>) -> SIMD8<UInt16> { v &* unsafeBitCast(m, to: SIMD8<UInt16>.self) }
        let e0 = nibble(times(k.0)), e1 = nibble(times(k.1)), o0 = nibble(times(k.2)), o1 = nibble(v)
        return madd(e0, x[0]) &+ madd(e1, x[1]) &+ madd(o0, x[2]) &+ madd(o1, x[3])
    }

    /// 32 int8 . one block of xq. As Int16 lanes, `lane * 256 >> 8` (arithmetic)
    /// sign-extends the even byte and `lane >> 8` the odd one; `k` is 256.
    @inline(__always)
    static func dotQ8_0(_ qs: UnsafeRawPointer, _ x: UnsafePointer<SIMD8<Int16>>, _ k: SIMD8<Int16>) -> SIMD4<Int32> {
        let v0 = qs.loadUnaligned(as: SIMD8<Int16>.self)
        let v1 = qs.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self)
        let e0 = (v0 &* k) &>> 8, o0 = v0 &>> 8
        let e1 = (v1 &* k) &>> 8, o1 = v1 &>> 8
        return madd(e0, x[0]) &+ madd(e1, x[1]) &+ madd(o0, x[2]) &+ madd(o1, x[3])
    }

    /// Products of Int16 lanes summed in adjacent pairs; LLVM emits one `pmaddwd`.
    /// Cannot overflow here: |w| <= 128 and |x| <= 32767 keep a block's total under 2^28.
    @inline(__always)
    static func madd(_ w: SIMD8<Int16>, _ x: SIMD8<Int16>) -> SIMD4<Int32> {
        let p = SIMD8<Int32>(truncatingIfNeeded: w) &* SIMD8<Int32>(truncatingIfNeeded: x)
        return p.evenHalf &+ p.oddHalf
    }

    /// The totals of four vectors, [a.sum, b.sum, c.sum, d.sum], by pairwise adds.
    @inline(__always)
    static func reduce4(_ a: SIMD4<Int32>, _ b: SIMD4<Int32>, _ c: SIMD4<Int32>, _ d: SIMD4<Int32>) -> SIMD4<Int32> {
        let ab = SIMD8(lowHalf: a, highHalf: b), cd = SIMD8(lowHalf: c, highHalf: d)
        let s = SIMD8(lowHalf: ab.evenHalf &+ ab.oddHalf, highHalf: cd.evenHalf &+ cd.oddHalf)
        return s.evenHalf &+ s.oddHalf
    }
}
#endif
