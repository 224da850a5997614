#if arch(x86_64) && SPARSEKV_AVX2
import _Builtin_intrinsics.intel

/// The matrix-vector kernels for AVX2 builds (Package.swift defines SPARSEKV_AVX2 when
/// the target CPU has it, the default). They compute exactly what the portable kernels
/// in QuantizedMatrix+Portable.swift compute, the same integer block sums and the same
/// float operations in the same order, so both give bit-identical results; only the
/// instructions differ.
///
/// Swift's SIMD types alone do not give LLVM a shape it reliably turns into 256-bit
/// `vpmaddwd`: once it knows that nibble lanes are small it "narrows" the products into
/// unpack and 32-bit multiply sequences several times longer. Intel's intrinsics
/// (clang's builtin module) name the instructions directly. A Q4_1 block is then one
/// zero-extending load of its 16 bytes into 16-bit lanes, an AND and a shift for the low
/// and high nibbles, and two `vpmaddwd` against the input in natural order; twice the
/// width of the portable kernel with a third of its instructions.
extension QuantizedMatrix {
    /// x rounded to 16-bit integers per block of 32, in natural order: block b's 32
    /// values are `q[4b ..< 4b + 4]` read as one 64-byte run.
    @inline(never)
    static func quantizeInput(_ x: UnsafePointer<Float>, blocks nb: Int, into out: Input) {
        for b in 0..<nb {
            let r = roundBlock(x, b, into: out)
            out.q[4 * b] = r.0
            out.q[4 * b + 1] = r.1
            out.q[4 * b + 2] = r.2
            out.q[4 * b + 3] = r.3
        }
    }

    /// One Q4_1 row: sum over blocks of d * (q . xq) * xscale + m * sum(x).
    @inline(__always)
    static func rowQ4_1(_ row: UnsafeRawPointer, _ nb: Int, _ x: Input) -> Float {
        let xq = UnsafeRawPointer(x.q)
        var acc = SIMD4<Float>(), offsets = SIMD4<Float>()
        var b = 0
        while b + 4 <= nb {
            let p = row + b * 20
            let dm = gather4(p, stride: 20)  // d in the low half, m in the high half
            let d = highHalfToFloat(dm &<< 16), m = highHalfToFloat(dm)
            let s = reduce4(dotQ4_1(p + 4, xq + b * 64), dotQ4_1(p + 24, xq + b * 64 + 64),
                            dotQ4_1(p + 44, xq + b * 64 + 128), dotQ4_1(p + 64, xq + b * 64 + 192))
            acc += SIMD4<Float>(s) * d * load4(x.scale + b)
            offsets += m * load4(x.sum + b)
            b += 4
        }
        var tail: Float = 0
        while b < nb {
            let p = row + b * 20
            let s = Float(total(dotQ4_1(p + 4, xq + b * 64)))
            tail += s * half(p) * x.scale[b] + half(p + 2) * x.sum[b]
            b += 1
        }
        return (acc + offsets).sum() + tail
    }

    /// One Q8_0 row: sum over blocks of d * (q . xq) * xscale.
    @inline(__always)
    static func rowQ8_0(_ row: UnsafeRawPointer, _ nb: Int, _ x: Input) -> Float {
        let xq = UnsafeRawPointer(x.q)
        var acc = SIMD4<Float>()
        var b = 0
        while b + 4 <= nb {
            let p = row + b * 34
            let d = highHalfToFloat(gather4(p, stride: 34) &<< 16)
            let s = reduce4(dotQ8_0(p + 2, xq + b * 64), dotQ8_0(p + 36, xq + b * 64 + 64),
                            dotQ8_0(p + 70, xq + b * 64 + 128), dotQ8_0(p + 104, xq + b * 64 + 192))
            acc += SIMD4<Float>(s) * d * load4(x.scale + b)
            b += 4
        }
        var tail: Float = 0
        while b < nb {
            let p = row + b * 34
            tail += Float(total(dotQ8_0(p + 2, xq + b * 64))) * half(p) * x.scale[b]
            b += 1
        }
        return acc.sum() + tail
    }

    // MARK: - Block dot products

    /// 16 nibble bytes . one block of xq, as eight partial Int32 sums. Byte j holds
    /// element j in its low nibble and element j + 16 in its high one.
    @inline(__always)
    static func dotQ4_1(_ qs: UnsafeRawPointer, _ x: UnsafeRawPointer) -> __m256i {
        let w = _mm256_cvtepu8_epi16(_mm_loadu_si128(qs.assumingMemoryBound(to: __m128i.self)))
        let lo = _mm256_and_si256(w, _mm256_set1_epi16(15))
        let hi = _mm256_srli_epi16(w, 4)
        return _mm256_add_epi32(_mm256_madd_epi16(lo, load256(x)), _mm256_madd_epi16(hi, load256(x + 32)))
    }

    /// 32 int8 . one block of xq, as eight partial Int32 sums.
    @inline(__always)
    static func dotQ8_0(_ qs: UnsafeRawPointer, _ x: UnsafeRawPointer) -> __m256i {
        let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(qs.assumingMemoryBound(to: __m128i.self)))
        let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((qs + 16).assumingMemoryBound(to: __m128i.self)))
        return _mm256_add_epi32(_mm256_madd_epi16(w0, load256(x)), _mm256_madd_epi16(w1, load256(x + 32)))
    }

    @inline(__always)
    static func load256(_ p: UnsafeRawPointer) -> __m256i {
        _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))
    }

    /// The totals of four 8-lane vectors, [a.sum, b.sum, c.sum, d.sum]. Integer adds
    /// are exact, so any order gives the portable kernel's values.
    @inline(__always)
    static func reduce4(_ a: __m256i, _ b: __m256i, _ c: __m256i, _ d: __m256i) -> SIMD4<Int32> {
        let abcd = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d)),
                                 to: SIMD8<Int32>.self)
        return abcd.lowHalf &+ abcd.highHalf
    }

    /// The total of one 8-lane vector.
    @inline(__always)
    static func total(_ a: __m256i) -> Int32 {
        let v = unsafeBitCast(a, to: SIMD8<Int32>.self)
        return (v.lowHalf &+ v.highHalf).wrappedSum()
    }
}
#endif
