import CBLAS
/// The per-vector loops of Matching Pursuit and Orthogonal Matching Pursuit, on raw
/// pointers so that the encoder can run them on disjoint rows from several threads.
///
/// Both work on a row of correlations corr[n] = <R, d_n> that the caller initialised with
/// one sgemm for the whole batch. After a step changes the residual by sum_j c_j d_j, the
/// new correlations are corr - sum_j c_j G[j, :], one pass over a Gram row per atom,
/// instead of the m-times costlier D^T R.
///
/// The MP update and the search for the next atom are one fused pass in Swift SIMD. Built
/// for AVX2 (the package's default target CPU) it measured 1.06-1.38x faster than
/// OpenBLAS saxpy + isamax (two passes) for N = 256 ... 16384; built for baseline x86-64
/// (SSE2 only) it is about 1.3x slower than them.
enum PursuitKernels {
    /// Called after step `k` (0-based) once `corr` describes the new residual and the
    /// outputs hold the first k + 1 pairs; used only by the tracing API.
    typealias Observer = (_ step: Int) -> Void

    // MARK: - Matching Pursuit

    /// Codes one vector with `s` MP steps.
    ///
    /// - Parameters:
    ///   - corr: (N) correlations of the vector with every atom; left describing the
    ///     final residual only when `observer` is set (the last update is skipped otherwise).
    ///   - gram: (N, N) Gram matrix.
    ///   - indices, coefficients: (s) outputs.
    @inline(__always)
    static func matchingPursuit(corr: UnsafeMutablePointer<Float>, gram: UnsafePointer<Float>, atomCount n: Int,
                                sparsity s: Int, indices: UnsafeMutablePointer<UInt16>,
                                coefficients: UnsafeMutablePointer<Float>, observer: Observer?) {
        matchingPursuit(corr: corr, atomCount: n, sparsity: s, indices: indices, coefficients: coefficients,
                        observer: observer) { gram + $0 * n }
    }

    /// ``matchingPursuit(corr:gram:atomCount:sparsity:indices:coefficients:observer:)``
    /// on two rows at once (corr and indices/coefficients of row b follow row a's by
    /// `n` and `s`): each step updates both rows in one pass, so two Gram rows stream in
    /// together. A step's Gram row mostly comes from beyond the core's own caches (N = 1024:
    /// a 4 MB matrix), and one row at a time left the loop waiting on it. Each row's
    /// arithmetic is the one-row kernel's, so the pairs are the same bit for bit.
    static func matchingPursuitPair(corr: UnsafeMutablePointer<Float>, gram: UnsafePointer<Float>, atomCount n: Int,
                                    sparsity s: Int, indices: UnsafeMutablePointer<UInt16>,
                                    coefficients: UnsafeMutablePointer<Float>) {
        let corrB = corr + n, indicesB = indices + s, coefficientsB = coefficients + s
        var bestA = argmaxAbs(corr, n), bestB = argmaxAbs(corrB, n)
        for k in 0..<s {
            let ca = corr[bestA], cb = corrB[bestB]
            indices[k] = UInt16(truncatingIfNeeded: bestA)
            coefficients[k] = ca
            indicesB[k] = UInt16(truncatingIfNeeded: bestB)
            coefficientsB[k] = cb
            if k == s - 1 { break }
            (bestA, bestB) = axpyArgmaxAbsPair(corr, -ca, gram + bestA * n, corrB, -cb, gram + bestB * n, n)
        }
    }

    /// `matchingPursuit` without a Gram matrix: the Gram row of each chosen atom,
    /// D d_j, is computed into `gramRow` (N floats) when the step needs it, with the
    /// same arithmetic as ``matchingPursuitLockstep``.
    @inline(__always)
    static func matchingPursuit(corr: UnsafeMutablePointer<Float>, atoms: UnsafePointer<Float>, panels: UnsafePointer<Float>,
                                dimension m: Int, gramRow: UnsafeMutablePointer<Float>, atomCount n: Int, sparsity s: Int,
                                indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>,
                                observer: Observer?) {
        matchingPursuit(corr: corr, atomCount: n, sparsity: s, indices: indices, coefficients: coefficients,
                        observer: observer) { best in
            correlate(panels: panels, atomCount: n, dimension: m, rows: atoms + best * m, rowCount: 1, into: gramRow)
            return UnsafePointer(gramRow)
        }
    }

    /// The MP steps, with `gramRow(j)` giving atom j's Gram row (N floats) when a step needs it.
    @inline(__always)
    private static func matchingPursuit(corr: UnsafeMutablePointer<Float>, atomCount n: Int, sparsity s: Int,
                                        indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>,
                                        observer: Observer?, gramRow: (Int) -> UnsafePointer<Float>) {
        var best = argmaxAbs(corr, n)
        for k in 0..<s {
            let c = corr[best]
            indices[k] = UInt16(truncatingIfNeeded: best)
            coefficients[k] = c
            if k == s - 1 && observer == nil { break }
            best = axpyArgmaxAbs(corr, -c, gramRow(best), n)
            observer?(k)
        }
    }

    // MARK: - Orthogonal Matching Pursuit

    /// Working memory of one OMP thread.
    struct OMPScratch {
        /// (N) correlations of the input vector itself, D^T x.
        let corr0: UnsafeMutablePointer<Float>
        /// (s, s) row-major lower-triangular Cholesky factor of G[S, S].
        let chol: UnsafeMutablePointer<Float>
        /// (s) selected atoms, in selection order.
        let selected: UnsafeMutablePointer<Int>
        /// (s) work vector for the triangular solves.
        let work: UnsafeMutablePointer<Float>
        /// (excludedCapacity) atoms skipped because they lie in the span of the selection.
        let excluded: UnsafeMutablePointer<Int>
        let excludedCapacity: Int

        /// Floats and Ints one scratch needs, for a single allocation per thread.
        static func floatCount(atomCount n: Int, sparsity s: Int) -> Int { n + s * s + s }
        static func intCount(sparsity s: Int) -> Int { s + excludedCapacity(sparsity: s) }
        static func excludedCapacity(sparsity s: Int) -> Int { 4 * s + 16 }
        /// Gram rows one vector's OMP without a Gram matrix needs: one per chosen atom.
        static func onDemandRows(sparsity s: Int) -> Int { s }

        init(floats: UnsafeMutablePointer<Float>, ints: UnsafeMutablePointer<Int>, atomCount n: Int, sparsity s: Int) {
            corr0 = floats
            chol = floats + n
            work = floats + n + s * s
            selected = ints
            excluded = ints + s
            excludedCapacity = Self.excludedCapacity(sparsity: s)
        }
    }

    /// Below this squared distance from the span of the atoms already chosen, a new atom
    /// adds nothing but round-off (duplicates in an online dictionary), so it is skipped.
    static let minNewDirection: Float = 1e-5

    /// Codes one vector with `s` OMP steps: MP's selection rule, then the coefficients of
    /// all chosen atoms re-fitted by least squares (Cholesky of G[S, S], grown one row per
    /// step). Pairs that cannot be filled (the residual vanished, or every candidate lies
    /// in the span already chosen) get coefficient 0 and repeat the first index.
    static func orthogonalMatchingPursuit(corr: UnsafeMutablePointer<Float>, gram: UnsafePointer<Float>, atomCount n: Int,
                                          sparsity s: Int, indices: UnsafeMutablePointer<UInt16>,
                                          coefficients: UnsafeMutablePointer<Float>, scratch: OMPScratch,
                                          observer: Observer?) {
        orthogonalMatchingPursuit(corr: corr, atomCount: n, sparsity: s, indices: indices, coefficients: coefficients,
                                  scratch: scratch, observer: observer, gramRow: { gram + $0 * n },
                                  squaredNorm: { gram[$0 * n + $0] })
    }

    /// `orthogonalMatchingPursuit` without a Gram matrix, one vector at a time (the
    /// tracer's; untraced, the encoder steps four together,
    /// ``orthogonalMatchingPursuitLockstep``): the Gram row of each chosen atom is computed
    /// once into `rows` when a step first needs it, with the arithmetic of ``correlate``
    /// (a candidate's own squared norm is one dot product). Costs one pass over the
    /// dictionary per chosen atom but the last, as MP does, instead of the N x N Gram matrix.
    ///
    /// - Parameter rows: (``OMPScratch/onDemandRows(sparsity:)``, N) work space.
    static func orthogonalMatchingPursuit(corr: UnsafeMutablePointer<Float>, atoms: UnsafePointer<Float>,
                                          panels: UnsafePointer<Float>, dimension m: Int, rows: UnsafeMutablePointer<Float>,
                                          atomCount n: Int, sparsity s: Int, indices: UnsafeMutablePointer<UInt16>,
                                          coefficients: UnsafeMutablePointer<Float>, scratch: OMPScratch,
                                          observer: Observer?) {
        var held = 0
        orthogonalMatchingPursuit(corr: corr, atomCount: n, sparsity: s, indices: indices, coefficients: coefficients,
                                  scratch: scratch, observer: observer, gramRow: { a in
            if let row = heldGramRow(a, scratch: scratch, held: held, rows: rows, n) { return row }
            // A chosen atom's row is first asked for by the update after choosing it, so
            // the rows come in the order the atoms were chosen.
            precondition(held < OMPScratch.onDemandRows(sparsity: s) && scratch.selected[held] == a,
                         "OMP asked for the Gram row of atom \(a) out of turn")
            let row = rows + held * n
            correlate(panels: panels, atomCount: n, dimension: m, rows: atoms + a * m, rowCount: 1, into: row)
            held += 1
            return UnsafePointer(row)
        }, squaredNorm: { gramDiagonal($0, atoms: atoms, panels: panels, n, m) })
    }

    /// The Gram row of chosen atom `a` among the first `held` of `rows`, (held, N), which
    /// hold the rows of the vector's chosen atoms in the order it chose them; nil when not held.
    @inline(__always)
    static func heldGramRow(_ a: Int, scratch: OMPScratch, held: Int, rows: UnsafeMutablePointer<Float>,
                            _ n: Int) -> UnsafePointer<Float>? {
        for j in 0..<held where scratch.selected[j] == a { return UnsafePointer(rows + j * n) }
        return nil
    }

    /// G[a, a] as ``correlate`` would put it in a's Gram row (a product does not depend on
    /// its lane), without the pass over every atom.
    @inline(__always)
    static func gramDiagonal(_ a: Int, atoms: UnsafePointer<Float>, panels: UnsafePointer<Float>, _ n: Int, _ m: Int) -> Float {
        panelDot(atoms + a * m, panels: panels, atom: a, m)
    }

    /// The OMP steps, with `gramRow(j)` giving atom j's Gram row (N floats).
    @inline(__always)
    private static func orthogonalMatchingPursuit(corr: UnsafeMutablePointer<Float>, atomCount n: Int, sparsity s: Int,
                                                  indices: UnsafeMutablePointer<UInt16>,
                                                  coefficients: UnsafeMutablePointer<Float>, scratch: OMPScratch,
                                                  observer: Observer?, gramRow: (Int) -> UnsafePointer<Float>,
                                                  squaredNorm: (Int) -> Float) {
        var v = OMPVector(corr: corr, atomCount: n, scratch: scratch)
        while v.select(sparsity: s, indices: indices, coefficients: coefficients, lastUpdate: observer != nil,
                       gramRow: gramRow, squaredNorm: squaredNorm) {
            v.update(gramRow: gramRow)
            observer?(v.k - 1)
        }
        v.fill(sparsity: s, indices: indices, coefficients: coefficients)
    }

    /// One vector's OMP in progress: the steps of ``orthogonalMatchingPursuit`` cut where
    /// a step first needs the Gram row of the atom it chose, so that several vectors can
    /// step together (``orthogonalMatchingPursuitLockstep``) with the same arithmetic.
    struct OMPVector {
        let corr: UnsafeMutablePointer<Float>
        let n: Int
        let scratch: OMPScratch
        /// Atoms chosen so far (`scratch.selected[0 ..< k]`).
        private(set) var k = 0
        private var excludedCount = 0
        private var best: Int

        /// Starts from `corr`, the vector's correlations with every atom.
        init(corr: UnsafeMutablePointer<Float>, atomCount n: Int, scratch: OMPScratch) {
            self.corr = corr
            self.n = n
            self.scratch = scratch
            scratch.corr0.update(from: corr, count: n)
            best = argmaxAbs(corr, n)
        }

        /// Chooses the next atom (MP's rule, skipping atoms in the span of the chosen ones)
        /// and re-fits the coefficients of all chosen atoms by least squares (Cholesky of
        /// G[S, S], grown one row per step), writing the first k pairs. Returns whether the
        /// correlations are to be updated: false once the vector is done (s atoms, after
        /// the last update only with `lastUpdate`; the residual vanished; or every
        /// candidate lies in the span). `gramRow` is asked only for atoms chosen before.
        @inline(__always)
        mutating func select(sparsity s: Int, indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>,
                             lastUpdate: Bool, gramRow: (Int) -> UnsafePointer<Float>, squaredNorm: (Int) -> Float) -> Bool {
            let chol = scratch.chol, sel = scratch.selected, w = scratch.work
            while k < s {
                let peak = corr[best]
                guard peak != 0, peak.isFinite else { return false }
                // Grow the Cholesky factor: L w = G[S, best], d^2 = G[best, best] - |w|^2.
                for j in 0..<k { w[j] = gramRow(sel[j])[best] }
                forwardSolve(chol, s, k, w)
                var d2 = squaredNorm(best)
                for j in 0..<k { d2 -= w[j] * w[j] }
                if !(d2 > minNewDirection) {
                    guard excludedCount < scratch.excludedCapacity else { return false }
                    scratch.excluded[excludedCount] = best
                    excludedCount += 1
                    corr[best] = 0
                    best = argmaxAbs(corr, n)
                    continue
                }
                for j in 0..<k { chol[k * s + j] = w[j] }
                chol[k * s + k] = d2.squareRoot()
                sel[k] = best
                k += 1
                // Least squares on the selection: L L^T c = D_S^T x.
                for j in 0..<k { w[j] = scratch.corr0[sel[j]] }
                forwardSolve(chol, s, k, w)
                backwardSolve(chol, s, k, w)
                for j in 0..<k {
                    indices[j] = UInt16(truncatingIfNeeded: sel[j])
                    coefficients[j] = w[j]
                }
                return k < s || lastUpdate
            }
            return false
        }

        /// The atom chosen last, whose Gram row ``update(gramRow:)`` reads first.
        var newest: Int { scratch.selected[k - 1] }

        /// corr = D^T (x - D_S c) = corr0 - sum_j c_j G[S_j, :]; the chosen atoms and the
        /// skipped ones are zeroed so that round-off cannot pick them again.
        @inline(__always)
        mutating func update(gramRow: (Int) -> UnsafePointer<Float>) {
            let sel = scratch.selected, count = k
            withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: count) { rows in
                for j in 0..<count { rows[j] = gramRow(sel[j]) }
                subtractCombination(scratch.corr0, weights: scratch.work, rows: rows.baseAddress!, count: count, n, into: corr)
            }
            for j in 0..<k { corr[sel[j]] = 0 }
            for j in 0..<excludedCount { corr[scratch.excluded[j]] = 0 }
            best = argmaxAbs(corr, n)
        }

        /// Pairs that could not be filled get coefficient 0 and repeat the first index.
        func fill(sparsity s: Int, indices: UnsafeMutablePointer<UInt16>, coefficients: UnsafeMutablePointer<Float>) {
            let filler: UInt16 = k > 0 ? indices[0] : 0
            for j in k..<s {
                indices[j] = filler
                coefficients[j] = 0
            }
        }
    }

    /// Solves L y = b in place for the leading k x k block of `l` (row stride `ld`).
    @inline(__always)
    static func forwardSolve(_ l: UnsafePointer<Float>, _ ld: Int, _ k: Int, _ b: UnsafeMutablePointer<Float>) {
        for i in 0..<k {
            var v = b[i]
            for j in 0..<i { v -= l[i * ld + j] * b[j] }
            b[i] = v / l[i * ld + i]
        }
    }

    /// Solves L^T x = y in place for the leading k x k block of `l` (row stride `ld`).
    @inline(__always)
    static func backwardSolve(_ l: UnsafePointer<Float>, _ ld: Int, _ k: Int, _ b: UnsafeMutablePointer<Float>) {
        var i = k - 1
        while i >= 0 {
            var v = b[i]
            for j in (i + 1)..<k { v -= l[j * ld + i] * b[j] }
            b[i] = v / l[i * ld + i]
            i -= 1
        }
    }

    // MARK: - Vector loops

    /// out = x - sum_j w[j] rows[j] over n values in one pass: each value takes the same
    /// roundings in the same order as copying x and then adding (-w_j) rows[j] row by row,
    /// without reading and writing `out` once per row.
    @inline(__always)
    static func subtractCombination(_ x: UnsafePointer<Float>, weights w: UnsafePointer<Float>,
                                    rows: UnsafePointer<UnsafePointer<Float>>, count k: Int, _ n: Int,
                                    into out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= n {
            var v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            for j in 0..<k {
                v += SIMD8(repeating: -w[j]) * UnsafeRawPointer(rows[j] + i).loadUnaligned(as: SIMD8<Float>.self)
            }
            UnsafeMutableRawPointer(out + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            var v = x[i]
            for j in 0..<k { v += -w[j] * rows[j][i] }
            out[i] = v
            i += 1
        }
    }

    /// Index of the largest |x[i]|, the first one on ties; 0 when every value is NaN,
    /// so the result is always a valid index.
    @inline(__always)
    static func argmaxAbs(_ x: UnsafePointer<Float>, _ n: Int) -> Int {
        var bestValue = SIMD8<Float>(repeating: -1)
        var bestIndex = SIMD8<Int32>(repeating: 0)
        var lane = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 8 <= n {
            let v = abs8(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
            let better = v .> bestValue
            bestValue.replace(with: v, where: better)
            bestIndex.replace(with: lane, where: better)
            lane &+= 8
            i += 8
        }
        return finish(bestValue, bestIndex, x, from: i, n)
    }

    /// y += a x, returning the index of the largest |y[i]| afterwards (the same rule as
    /// `argmaxAbs`): one pass over y instead of two.
    @inline(__always)
    static func axpyArgmaxAbs(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) -> Int {
        var bestValue = SIMD8<Float>(repeating: -1)
        var bestIndex = SIMD8<Int32>(repeating: 0)
        var lane = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
        let av = SIMD8<Float>(repeating: a)
        let yRaw = UnsafeMutableRawPointer(y), xRaw = UnsafeRawPointer(x)
        var i = 0
        while i + 8 <= n {
            axpyBlock(yRaw, av, xRaw, at: i * 4, lane: lane, best: &bestValue, index: &bestIndex)
            lane &+= 8
            i += 8
        }
        for j in i..<n { y[j] += a * x[j] }
        return finish(bestValue, bestIndex, UnsafePointer(y), from: i, n)
    }

    /// One block of eight floats at byte `offset`: y += a x, then each lane's running
    /// maximum of |y| and its index (`lane`), the first on ties.
    @inline(__always)
    private static func axpyBlock(_ y: UnsafeMutableRawPointer, _ a: SIMD8<Float>, _ x: UnsafeRawPointer, at offset: Int,
                                  lane: SIMD8<Int32>, best: inout SIMD8<Float>, index: inout SIMD8<Int32>) {
        let r = y.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
            + a * x.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
        y.storeBytes(of: r, toByteOffset: offset, as: SIMD8<Float>.self)
        let v = abs8(r), better = v .> best
        best.replace(with: v, where: better)
        index.replace(with: lane, where: better)
    }

    /// ``axpyArgmaxAbs(_:_:_:_:)`` on two rows in one pass: y += a x and z += b w.
    @inline(__always)
    static func axpyArgmaxAbsPair(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>,
                                  _ z: UnsafeMutablePointer<Float>, _ b: Float, _ w: UnsafePointer<Float>, _ n: Int) -> (Int, Int) {
        var bestY = SIMD8<Float>(repeating: -1), bestZ = bestY
        var indexY = SIMD8<Int32>(repeating: 0), indexZ = indexY
        var lane = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
        let av = SIMD8<Float>(repeating: a), bv = SIMD8<Float>(repeating: b)
        let yRaw = UnsafeMutableRawPointer(y), xRaw = UnsafeRawPointer(x)
        let zRaw = UnsafeMutableRawPointer(z), wRaw = UnsafeRawPointer(w)
        var i = 0
        while i + 8 <= n {
            axpyBlock(yRaw, av, xRaw, at: i * 4, lane: lane, best: &bestY, index: &indexY)
            axpyBlock(zRaw, bv, wRaw, at: i * 4, lane: lane, best: &bestZ, index: &indexZ)
            lane &+= 8
            i += 8
        }
        for j in i..<n {
            y[j] += a * x[j]
            z[j] += b * w[j]
        }
        return (finish(bestY, indexY, UnsafePointer(y), from: i, n), finish(bestZ, indexZ, UnsafePointer(z), from: i, n))
    }

    @inline(__always)
    private static func abs8(_ v: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: SIMD8<Float>.self)
    }

    /// Reduces the eight lanes (smallest index among equal maxima) and scans the tail.
    @inline(__always)
    private static func finish(_ value: SIMD8<Float>, _ index: SIMD8<Int32>, _ x: UnsafePointer<Float>,
                               from start: Int, _ n: Int) -> Int {
        var bestV: Float = -1, bestI = 0
        for l in 0..<8 where value[l] > bestV || (value[l] == bestV && Int(index[l]) < bestI) {
            bestV = value[l]
            bestI = Int(index[l])
        }
        for j in start..<n {
            let v = abs(x[j])
            if v > bestV {
                bestV = v
                bestI = j
            }
        }
        return bestI
    }
}
