/// Matching Pursuit for a handful of vectors without a Gram matrix (a decoded token's
/// keys or values): the vectors step together, the Gram rows of every vector's chosen
/// atom computed by one call of the correlation kernel.
///
/// No BLAS call: OpenBLAS hands a 1024 x 64 sgemv to its thread pool, whose threads then
/// spin in sched_yield for the rest of the decode step, taking the core the step's own
/// threads need.
extension PursuitKernels {
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
                                        columns: UnsafePointer<Float>, atomCount n: Int, dimension m: Int, sparsity s: Int,
                                        corr: UnsafeMutablePointer<Float>, scratch: LockstepScratch,
                                        indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>) {
        correlate(columns: columns, atomCount: n, dimension: m, rows: vectors, rowCount: rows, into: corr)
        for r in 0..<rows { scratch.best[r] = argmaxAbs(corr + r * n, n) }
        for k in 0..<s {
            for r in 0..<rows {
                let b = scratch.best[r]
                indices[r * s + k] = UInt16(truncatingIfNeeded: b)
                coefficients[r * s + k] = corr[r * n + b]
                (scratch.chosen + r * m).update(from: atoms + b * m, count: m)
            }
            if k == s - 1 { break }
            correlate(columns: columns, atomCount: n, dimension: m, rows: scratch.chosen, rowCount: rows, into: scratch.gramRows)
            for r in 0..<rows {
                scratch.best[r] = axpyArgmaxAbs(corr + r * n, -coefficients[r * s + k], scratch.gramRows + r * n, n)
            }
        }
    }
}
