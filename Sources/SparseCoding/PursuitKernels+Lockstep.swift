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
                                        panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int, sparsity s: Int,
                                        corr: UnsafeMutablePointer<Float>, scratch: LockstepScratch,
                                        indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>) {
        correlate(panels: panels, atomCount: n, dimension: m, rows: vectors, rowCount: rows, into: corr)
        for r in 0..<rows { scratch.best[r] = argmaxAbs(corr + r * n, n) }
        for k in 0..<s {
            for r in 0..<rows {
                let b = scratch.best[r]
                indices[r * s + k] = UInt16(truncatingIfNeeded: b)
                coefficients[r * s + k] = corr[r * n + b]
                (scratch.chosen + r * m).update(from: atoms + b * m, count: m)
            }
            if k == s - 1 { break }
            correlate(panels: panels, atomCount: n, dimension: m, rows: scratch.chosen, rowCount: rows, into: scratch.gramRows)
            for r in 0..<rows {
                scratch.best[r] = axpyArgmaxAbs(corr + r * n, -coefficients[r * s + k], scratch.gramRows + r * n, n)
            }
        }
    }
}

extension PursuitKernels {
    /// Vectors OMP steps together: the correlation kernel's group (its reads shared by four rows).
    static let ompLockstepRows = 4

    /// Scratch of one ``orthogonalMatchingPursuitLockstep`` call, for up to
    /// ``ompLockstepRows`` vectors.
    struct OMPLockstepScratch {
        /// One OMP scratch per vector.
        let vectors: [OMPScratch]
        /// (rows, s, N) each vector's Gram rows, in the order its atoms were chosen
        let gramRows: UnsafeMutablePointer<Float>
        /// (rows, N) the Gram rows of one step, as the kernel writes them
        let fresh: UnsafeMutablePointer<Float>
        /// (rows, m) copies of the atoms whose rows a step computes
        let chosen: UnsafeMutablePointer<Float>
    }

    /// Codes `rows` vectors (at most ``ompLockstepRows``) with OMP without a Gram matrix,
    /// in lockstep: each round, every vector still going chooses its next atom
    /// (``OMPVector/select``), then one call of the correlation kernel gives all of those
    /// atoms' Gram rows and every vector updates its correlations. The arithmetic of each
    /// vector is that of ``orthogonalMatchingPursuit(corr:atoms:panels:dimension:rows:atomCount:sparsity:indices:coefficients:scratch:observer:)``,
    /// so the pairs are the same bit for bit; the dictionary is read once per round
    /// instead of once per vector.
    ///
    /// - Parameters:
    ///   - vectors: (rows, m) the inputs.
    ///   - corr: (rows, N) work space; overwritten.
    ///   - indices, coefficients: (rows, s) outputs.
    static func orthogonalMatchingPursuitLockstep(vectors: UnsafePointer<Float>, rows: Int, atoms: UnsafePointer<Float>,
                                                  panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                                  sparsity s: Int, corr: UnsafeMutablePointer<Float>, scratch: OMPLockstepScratch,
                                                  indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>) {
        precondition(rows <= ompLockstepRows && rows <= scratch.vectors.count, "\(rows) vectors in one OMP lockstep")
        correlate(panels: panels, atomCount: n, dimension: m, rows: vectors, rowCount: rows, into: corr)
        var state = (0..<rows).map { OMPVector(corr: corr + $0 * n, atomCount: n, scratch: scratch.vectors[$0]) }
        // Vector r's Gram rows, in the order it chose the atoms; `held` of them computed.
        @inline(__always) func heldRow(_ r: Int, _ held: Int, _ a: Int) -> UnsafePointer<Float> {
            guard let row = heldGramRow(a, scratch: scratch.vectors[r], held: held, rows: scratch.gramRows + r * s * n, n) else {
                preconditionFailure("OMP asked for the Gram row of atom \(a), not chosen")
            }
            return row
        }
        @inline(__always) func squaredNorm(_ a: Int) -> Float { gramDiagonal(a, atoms: atoms, panels: panels, n, m) }
        var going = Array(0..<rows), stepping: [Int] = []
        stepping.reserveCapacity(rows)
        while !going.isEmpty {
            stepping.removeAll(keepingCapacity: true)
            for r in going {
                // The rows of the atoms chosen in earlier rounds: all that select reads.
                let held = state[r].k
                let more = state[r].select(sparsity: s, indices: indices + r * s, coefficients: coefficients + r * s,
                                           lastUpdate: false, gramRow: { heldRow(r, held, $0) }, squaredNorm: squaredNorm)
                if more {
                    stepping.append(r)
                } else {
                    state[r].fill(sparsity: s, indices: indices + r * s, coefficients: coefficients + r * s)
                }
            }
            guard !stepping.isEmpty else { break }
            for (i, r) in stepping.enumerated() { (scratch.chosen + i * m).update(from: atoms + state[r].newest * m, count: m) }
            correlate(panels: panels, atomCount: n, dimension: m, rows: scratch.chosen, rowCount: stepping.count,
                      into: scratch.fresh)
            for (i, r) in stepping.enumerated() {
                (scratch.gramRows + (r * s + state[r].k - 1) * n).update(from: scratch.fresh + i * n, count: n)
                let held = state[r].k
                state[r].update(gramRow: { heldRow(r, held, $0) })
            }
            going = stepping
        }
    }
}
