/// Matching Pursuit for a handful of vectors without a Gram matrix (a decoded token's
/// keys or values): the vectors step together, and each step reads the dictionary once
/// for all of them.
///
/// The dictionary (N x m floats, 256 KB for N = 1024, m = 64) is larger than L1, so its
/// reads are what a step costs. Coding the vectors one by one, each step reads it once
/// per vector; in lockstep the Gram rows of every vector's chosen atom come from one pass.
/// No BLAS call either: OpenBLAS hands a 1024 x 64 sgemv to its thread pool, whose
/// threads then spin in sched_yield for the rest of the decode step, taking the core the
/// step's own threads need.
extension PursuitKernels {
    /// out[r * n + a] = <atoms[a], rows[r]> for every row r < `rowCount` and atom a < n.
    ///
    /// Atoms go eight at a time: their 8 m floats stay in L1 while every row is dotted
    /// with them, and the eight sums end in one transposing reduction instead of eight
    /// horizontal ones. A row's result does not depend on the other rows or on where its
    /// atom falls in a block (the last, partial block repeats a valid atom and drops it).
    ///
    /// - Parameters:
    ///   - atoms: (N, m) row-major.
    ///   - rows: (rowCount, m) row-major.
    ///   - out: (rowCount, N) row-major.
    static func correlate(atoms: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                          rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        guard n > 0 else { return }
        let wide = m & ~7
        var a0 = 0
        while a0 < n {
            let last = n - 1
            let d0 = UnsafeRawPointer(atoms + min(a0, last) * m), d1 = UnsafeRawPointer(atoms + min(a0 + 1, last) * m)
            let d2 = UnsafeRawPointer(atoms + min(a0 + 2, last) * m), d3 = UnsafeRawPointer(atoms + min(a0 + 3, last) * m)
            let d4 = UnsafeRawPointer(atoms + min(a0 + 4, last) * m), d5 = UnsafeRawPointer(atoms + min(a0 + 5, last) * m)
            let d6 = UnsafeRawPointer(atoms + min(a0 + 6, last) * m), d7 = UnsafeRawPointer(atoms + min(a0 + 7, last) * m)
            for r in 0..<rowCount {
                let x = rows + r * m, xr = UnsafeRawPointer(x)
                var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
                var s4 = SIMD8<Float>(), s5 = SIMD8<Float>(), s6 = SIMD8<Float>(), s7 = SIMD8<Float>()
                var c = 0
                while c < wide {
                    let o = c * 4
                    let v = xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                    s0.addProduct(d0.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s1.addProduct(d1.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s2.addProduct(d2.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s3.addProduct(d3.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s4.addProduct(d4.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s5.addProduct(d5.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s6.addProduct(d6.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    s7.addProduct(d7.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
                    c += 8
                }
                var sums = transposedSums(s0, s1, s2, s3, s4, s5, s6, s7)
                if wide < m {
                    var tail = SIMD8<Float>()
                    for j in wide..<m {
                        let t = SIMD8<Float>(d0.load(fromByteOffset: j * 4, as: Float.self), d1.load(fromByteOffset: j * 4, as: Float.self),
                                             d2.load(fromByteOffset: j * 4, as: Float.self), d3.load(fromByteOffset: j * 4, as: Float.self),
                                             d4.load(fromByteOffset: j * 4, as: Float.self), d5.load(fromByteOffset: j * 4, as: Float.self),
                                             d6.load(fromByteOffset: j * 4, as: Float.self), d7.load(fromByteOffset: j * 4, as: Float.self))
                        tail.addProduct(t, SIMD8(repeating: x[j]))
                    }
                    sums += tail
                }
                let o = out + r * n + a0
                if a0 + 8 <= n {
                    UnsafeMutableRawPointer(o).storeBytes(of: sums, as: SIMD8<Float>.self)
                } else {
                    for l in 0..<(n - a0) { o[l] = sums[l] }
                }
            }
            a0 += 8
        }
    }

    /// Scratch of one ``matchingPursuitLockstep`` call.
    struct LockstepScratch {
        /// (rows, N) the Gram rows of each vector's chosen atom
        let gramRows: UnsafeMutablePointer<Float>
        /// (rows, m) copies of the chosen atoms, side by side
        let chosen: UnsafeMutablePointer<Float>
        /// (rows) each vector's next atom
        let best: UnsafeMutablePointer<Int>
    }

    /// Codes `rows` vectors with `s` MP steps each, in lockstep. Gives the same pairs as
    /// coding each vector on its own with Gram rows computed on demand: the arithmetic of
    /// every vector's correlations is the same, only the order of the dictionary reads
    /// changes.
    ///
    /// - Parameters:
    ///   - vectors: (rows, m) the inputs.
    ///   - corr: (rows, N) work space; overwritten.
    ///   - indices, coefficients: (rows, s) outputs.
    static func matchingPursuitLockstep(vectors: UnsafePointer<Float>, rows: Int, atoms: UnsafePointer<Float>,
                                        atomCount n: Int, dimension m: Int, sparsity s: Int,
                                        corr: UnsafeMutablePointer<Float>, scratch: LockstepScratch,
                                        indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>) {
        correlate(atoms: atoms, atomCount: n, dimension: m, rows: vectors, rowCount: rows, into: corr)
        for r in 0..<rows { scratch.best[r] = argmaxAbs(corr + r * n, n) }
        for k in 0..<s {
            for r in 0..<rows {
                let b = scratch.best[r]
                indices[r * s + k] = UInt16(truncatingIfNeeded: b)
                coefficients[r * s + k] = corr[r * n + b]
                (scratch.chosen + r * m).update(from: atoms + b * m, count: m)
            }
            if k == s - 1 { break }
            correlate(atoms: atoms, atomCount: n, dimension: m, rows: scratch.chosen, rowCount: rows, into: scratch.gramRows)
            for r in 0..<rows {
                scratch.best[r] = axpyArgmaxAbs(corr + r * n, -coefficients[r * s + k], scratch.gramRows + r * n, n)
            }
        }
    }
}
