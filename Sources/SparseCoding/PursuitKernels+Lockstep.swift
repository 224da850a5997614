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
    /// Atoms go eight at a time (``dots8``): their 8 m floats stay in L1 while every row
    /// is dotted with them. A row's result does not depend on the other rows or on where
    /// its atom falls in a block.
    ///
    /// - Parameters:
    ///   - atoms: (N, m) row-major.
    ///   - rows: (rowCount, m) row-major.
    ///   - out: (rowCount, N) row-major.
    static func correlate(atoms: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                          rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        var a0 = 0
        while a0 < n {
            for r in 0..<rowCount {
                let sums = dots8(rows + r * m, rows: atoms + a0 * m, stride: m, count: n - a0, dim: m)
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
