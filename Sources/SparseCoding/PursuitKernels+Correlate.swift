/// The correlation kernel of the Gram-free pursuit: a vector's correlations with every
/// atom, or a chosen atom's Gram row, read from the atoms column by column.
///
/// With the atoms stored (m, N), the correlations of x are sum_i x[i] D^T[i, :], a
/// broadcast and a multiply-add per 8 atoms and channel: no horizontal sums, and each
/// channel's row of D^T streams once. Measured on one core (`SPARSEKV_BENCH=1`,
/// EncoderBenchmarks.correlateLayouts) against the row-major kernel before it (eight dot
/// products at a time, then their horizontal sums): N = 1024, m = 64 from 9.3 to 3.6-4.6
/// µs per row, 2.9 with four rows sharing the reads; N = 512, m = 32 from 3.1 to 0.7-1.2,
/// 0.8 four at once.
extension PursuitKernels {
    /// out[r * n + a] = <atom a, rows[r]> for every row r < `rowCount` and atom a < n.
    ///
    /// Every entry is the same chain of fused multiply-adds over the channels in order,
    /// from zero, whichever block or lane its atom falls in (``columnDot``), so a row's
    /// result depends neither on the other rows nor on N.
    ///
    /// - Parameters:
    ///   - columns: (m, N) row-major, ``SparseDictionary/columns()``.
    ///   - rows: (rowCount, m) row-major.
    ///   - out: (rowCount, N) row-major.
    static func correlate(columns: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                          rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        if rowCount == 1 {
            correlateRow(columns: columns, atomCount: n, stride: n, dimension: m, row: rows, into: out)
            return
        }
        var r0 = 0
        while r0 < rowCount {
            correlateFourRows(columns: columns, atomCount: n, dimension: m, rows: rows + r0 * m,
                              rowCount: min(4, rowCount - r0), into: out + r0 * n)
            r0 += 4
        }
    }

    /// Up to four rows at once (a lockstep's chosen atoms): each 16 atoms' columns are read
    /// once for all of them, so the rows share the dictionary's reads from L2. Missing rows
    /// repeat the last one and are not stored.
    @inline(__always)
    private static func correlateFourRows(columns: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                          rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        let d = UnsafeRawPointer(columns)
        let x0 = rows, x1 = rows + min(1, rowCount - 1) * m, x2 = rows + min(2, rowCount - 1) * m
        let x3 = rows + min(3, rowCount - 1) * m
        @inline(__always) func store(_ r: Int, _ a0: Int, _ lo: SIMD8<Float>, _ hi: SIMD8<Float>) {
            guard r < rowCount else { return }
            let o = UnsafeMutableRawPointer(out + r * n + a0)
            o.storeBytes(of: lo, as: SIMD8<Float>.self)
            o.storeBytes(of: hi, toByteOffset: 32, as: SIMD8<Float>.self)
        }
        var a0 = 0
        while a0 + 16 <= n {
            var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
            var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
            for i in 0..<m {
                let b = (i * n + a0) * 4
                let lo = d.loadUnaligned(fromByteOffset: b, as: SIMD8<Float>.self)
                let hi = d.loadUnaligned(fromByteOffset: b + 32, as: SIMD8<Float>.self)
                let v0 = SIMD8<Float>(repeating: x0[i]), v1 = SIMD8<Float>(repeating: x1[i])
                let v2 = SIMD8<Float>(repeating: x2[i]), v3 = SIMD8<Float>(repeating: x3[i])
                c00.addProduct(lo, v0)
                c01.addProduct(hi, v0)
                c10.addProduct(lo, v1)
                c11.addProduct(hi, v1)
                c20.addProduct(lo, v2)
                c21.addProduct(hi, v2)
                c30.addProduct(lo, v3)
                c31.addProduct(hi, v3)
            }
            store(0, a0, c00, c01)
            store(1, a0, c10, c11)
            store(2, a0, c20, c21)
            store(3, a0, c30, c31)
            a0 += 16
        }
        // The last atoms (fewer than 16) row by row.
        guard a0 < n else { return }
        for r in 0..<rowCount {
            correlateRow(columns: columns + a0, atomCount: n - a0, stride: n, dimension: m, row: rows + r * m,
                         into: out + r * n + a0)
        }
    }

    /// One row: atoms 0 ..< n of columns whose rows are `stride` floats apart (N, or more
    /// for the last atoms of a call).
    @inline(__always)
    private static func correlateRow(columns: UnsafePointer<Float>, atomCount n: Int, stride ld: Int, dimension m: Int,
                                     row x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let d = UnsafeRawPointer(columns), o = UnsafeMutableRawPointer(out)
        var a0 = 0
        // 64 atoms at a time: eight independent chains keep both FMA ports busy.
        while a0 + 64 <= n {
            var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>(), c3 = SIMD8<Float>()
            var c4 = SIMD8<Float>(), c5 = SIMD8<Float>(), c6 = SIMD8<Float>(), c7 = SIMD8<Float>()
            for i in 0..<m {
                let v = SIMD8<Float>(repeating: x[i]), b = (i * ld + a0) * 4
                c0.addProduct(d.loadUnaligned(fromByteOffset: b, as: SIMD8<Float>.self), v)
                c1.addProduct(d.loadUnaligned(fromByteOffset: b + 32, as: SIMD8<Float>.self), v)
                c2.addProduct(d.loadUnaligned(fromByteOffset: b + 64, as: SIMD8<Float>.self), v)
                c3.addProduct(d.loadUnaligned(fromByteOffset: b + 96, as: SIMD8<Float>.self), v)
                c4.addProduct(d.loadUnaligned(fromByteOffset: b + 128, as: SIMD8<Float>.self), v)
                c5.addProduct(d.loadUnaligned(fromByteOffset: b + 160, as: SIMD8<Float>.self), v)
                c6.addProduct(d.loadUnaligned(fromByteOffset: b + 192, as: SIMD8<Float>.self), v)
                c7.addProduct(d.loadUnaligned(fromByteOffset: b + 224, as: SIMD8<Float>.self), v)
            }
            let b = a0 * 4
            o.storeBytes(of: c0, toByteOffset: b, as: SIMD8<Float>.self)
            o.storeBytes(of: c1, toByteOffset: b + 32, as: SIMD8<Float>.self)
            o.storeBytes(of: c2, toByteOffset: b + 64, as: SIMD8<Float>.self)
            o.storeBytes(of: c3, toByteOffset: b + 96, as: SIMD8<Float>.self)
            o.storeBytes(of: c4, toByteOffset: b + 128, as: SIMD8<Float>.self)
            o.storeBytes(of: c5, toByteOffset: b + 160, as: SIMD8<Float>.self)
            o.storeBytes(of: c6, toByteOffset: b + 192, as: SIMD8<Float>.self)
            o.storeBytes(of: c7, toByteOffset: b + 224, as: SIMD8<Float>.self)
            a0 += 64
        }
        while a0 + 8 <= n {
            var c = SIMD8<Float>()
            for i in 0..<m {
                c.addProduct(d.loadUnaligned(fromByteOffset: (i * ld + a0) * 4, as: SIMD8<Float>.self), SIMD8(repeating: x[i]))
            }
            o.storeBytes(of: c, toByteOffset: a0 * 4, as: SIMD8<Float>.self)
            a0 += 8
        }
        while a0 < n {
            out[a0] = columnDot(x, columns + a0, stride: ld, m)
            a0 += 1
        }
    }

    /// <x, y> for y read with `stride`, as one lane of ``correlate(columns:atomCount:dimension:rows:rowCount:into:)``
    /// computes it: fused multiply-adds over the channels in order, from zero.
    @inline(__always)
    static func columnDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, stride: Int, _ m: Int) -> Float {
        var acc: Float = 0
        for i in 0..<m { acc.addProduct(y[i * stride], x[i]) }
        return acc
    }
}
