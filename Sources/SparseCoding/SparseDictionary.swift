import CBLAS
import Foundation

/// A dictionary of N unit-norm atoms of dimension m, the basis that sparse codes refer to.
///
/// Atoms are immutable once made, so the Gram matrix (the atoms' pairwise inner products,
/// which Matching Pursuit uses to update correlations instead of recomputing them) and
/// the atoms in panels (the Gram-free pursuit's layout) are computed on first use
/// and shared by every copy of the value.
public struct SparseDictionary: Sendable {
    /// Largest number of atoms: codes store indices in 16 bits, as in the CSR paper.
    public static let maxAtomCount = 1 << 16

    /// Largest Gram matrix (N x N floats) the encoder will allocate.
    public static let maxGramBytes = 1 << 32

    /// N, the number of atoms.
    public let atomCount: Int
    /// m, the dimension of each atom (and of the vectors it codes).
    public let dimension: Int
    /// (N, m) row-major; every row has unit Euclidean norm.
    public let atoms: [Float]

    private let gramCache = ComputedOnce<[Float]>()
    private let panelCache = ComputedOnce<AlignedFloats>()

    // MARK: - Making a dictionary

    /// Makes a dictionary from `atomCount` atoms of `dimension` values each, stored
    /// (N, m) row-major, scaling every atom to unit norm.
    ///
    /// - Throws: `SparseCodingError.badDictionaryShape` when the sizes disagree,
    ///   `.tooManyAtoms` above ``maxAtomCount``, `.zeroAtom` / `.nonFiniteAtom` for an
    ///   atom that cannot be normalized.
    public init(atoms: [Float], atomCount: Int, dimension: Int) throws {
        guard atomCount >= 1, dimension >= 1,
              !atomCount.multipliedReportingOverflow(by: dimension).overflow,
              atoms.count == atomCount * dimension
        else {
            throw SparseCodingError.badDictionaryShape(atomCount: atomCount, dimension: dimension, elements: atoms.count)
        }
        guard atomCount <= Self.maxAtomCount else {
            throw SparseCodingError.tooManyAtoms(atomCount: atomCount, limit: Self.maxAtomCount)
        }
        var normalized = atoms
        try normalized.withUnsafeMutableBufferPointer { buf in
            for n in 0..<atomCount {
                let row = UnsafeMutableBufferPointer(rebasing: buf[(n * dimension)..<((n + 1) * dimension)])
                try Self.normalize(row, index: n)
            }
        }
        self.atomCount = atomCount
        self.dimension = dimension
        self.atoms = normalized
    }

    /// Makes a dictionary of `atomCount` random directions (Gaussian entries, then
    /// normalized), the same for the same `seed` on every platform.
    public init(randomAtomCount atomCount: Int, dimension: Int, seed: UInt64) throws {
        guard atomCount <= Self.maxAtomCount else {
            throw SparseCodingError.tooManyAtoms(atomCount: atomCount, limit: Self.maxAtomCount)
        }
        guard atomCount >= 1, dimension >= 1, !atomCount.multipliedReportingOverflow(by: dimension).overflow else {
            throw SparseCodingError.badDictionaryShape(atomCount: atomCount, dimension: dimension, elements: 0)
        }
        var rng = Xoshiro256StarStar(seed: seed)
        var values = [Float](repeating: 0, count: atomCount * dimension)  // (N, m)
        for i in values.indices { values[i] = rng.nextGaussian() }
        try self.init(atoms: values, atomCount: atomCount, dimension: dimension)
    }

    /// Scales `row` to unit norm; the norm is summed in Double so that large m loses no accuracy.
    private static func normalize(_ row: UnsafeMutableBufferPointer<Float>, index: Int) throws {
        var sumSquares: Double = 0
        for v in row {
            guard v.isFinite else { throw SparseCodingError.nonFiniteAtom(index: index) }
            sumSquares += Double(v) * Double(v)
        }
        guard sumSquares > 0 else { throw SparseCodingError.zeroAtom(index: index) }
        let scale = 1 / sumSquares.squareRoot()
        for i in row.indices {
            let v = Float(Double(row[i]) * scale)
            // Subnormal-only atoms can round to zero once more here.
            guard v.isFinite else { throw SparseCodingError.nonFiniteAtom(index: index) }
            row[i] = v
        }
    }

    // MARK: - Access

    /// Atom `n` (0 ..< N) as m values (a slice of ``atoms``).
    public func atom(_ n: Int) -> ArraySlice<Float> {
        atoms[(n * dimension)..<((n + 1) * dimension)]
    }

    /// Bytes the Gram matrix takes once computed: N * N * 4.
    public var gramByteCount: Int { Self.gramByteCount(atomCount: atomCount) }

    /// Bytes of the Gram matrix of a dictionary of `atomCount` atoms.
    public static func gramByteCount(atomCount: Int) -> Int { atomCount * atomCount * MemoryLayout<Float>.size }

    /// The Gram matrix G = D D^T, (N, N) row-major: G[i, j] = <d_i, d_j>. Computed with one
    /// sgemm on first use and kept for the lifetime of the dictionary.
    ///
    /// - Throws: `SparseCodingError.gramTooLarge` when it would exceed ``maxGramBytes``.
    public func gram() throws -> [Float] {
        guard gramByteCount <= Self.maxGramBytes else {
            throw SparseCodingError.gramTooLarge(atomCount: atomCount, bytes: gramByteCount, limit: Self.maxGramBytes)
        }
        return gramCache.value { Self.computeGram(atoms, atomCount, dimension) }
    }

    /// The atoms in panels of 16, each panel channel by channel: (ceil(N / 16), m, 16), the
    /// last panel padded with zero atoms; value i of atom n is at
    /// `PursuitKernels.panelOffset(atom: n, dimension: m) + 16 * i`. The layout of the
    /// Gram-free pursuit's correlation kernel (``PursuitKernels``), computed on first use
    /// and kept (about N m floats, as much as the atoms), from a 64-byte boundary so that a
    /// panel channel is one cache line.
    public func panels() -> AlignedFloats {
        panelCache.value {
            let n = atomCount, m = dimension, w = PursuitKernels.panelWidth
            return AlignedFloats(count: PursuitKernels.panelFloats(atomCount: n, dimension: m)) { t in
                for a in 0..<n {
                    let base = PursuitKernels.panelOffset(atom: a, dimension: m)
                    for i in 0..<m { t[base + i * w] = atoms[a * m + i] }
                }
            }
        }
    }

    private static func computeGram(_ atoms: [Float], _ n: Int, _ m: Int) -> [Float] {
        var g = [Float](repeating: 0, count: n * n)  // (N, N)
        g.withUnsafeMutableBufferPointer { computeGram(atoms, n, m, into: $0.baseAddress!) }
        return g
    }

    /// G = D D^T for `atoms` (n, m) into `out` (n, n): one sgemm, or with `threads` > 1
    /// one per block of rows on that many threads (internal for the test that the blocks
    /// give the one-sgemm matrix bit for bit).
    static func computeGram(_ atoms: [Float], _ n: Int, _ m: Int, into out: UnsafeMutablePointer<Float>,
                            threads: Int = 1) {
        atoms.withUnsafeBufferPointer { d in
            guard let dp = d.baseAddress else { return }
            let job = GramRows(atoms: dp, out: out, n: n, m: m)
            // Row blocks start at multiples of 16 (OpenBLAS's row tiles), one per thread.
            let parts = max(1, min(threads, n / 64))
            guard parts > 1 else { return job.rows(0, n) }
            let step = (n / parts + 15) / 16 * 16
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                let r0 = min(n, p * step), r1 = p == parts - 1 ? n : min(n, (p + 1) * step)
                if r0 < r1 { job.rows(r0, r1) }
            }
        }
    }

    /// Rows of a Gram matrix. Safe to send: the atoms are only read, and each call writes
    /// its own rows of `out`.
    private struct GramRows: @unchecked Sendable {
        let atoms: UnsafePointer<Float>
        let out: UnsafeMutablePointer<Float>
        let n: Int, m: Int

        /// Rows r0 ..< r1 of G: D[r0 ..< r1] D^T.
        func rows(_ r0: Int, _ r1: Int) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r1 - r0), Int32(n), Int32(m),
                        1, atoms + r0 * m, Int32(m), atoms, Int32(m), 0, out + r0 * n, Int32(n))
        }
    }

    /// The Gram matrix written into `out` (N x N floats), for a caller that holds the
    /// buffer; the same products as ``gram()``. With `threads` > 1 and OpenBLAS on one
    /// thread, blocks of rows are computed on that many threads at once, each its own
    /// sgemm; the entries are the same bit for bit (every entry is one dot product over
    /// the m channels, whichever block it falls in). The caller checks ``maxGramBytes``.
    func computeGram(into out: UnsafeMutablePointer<Float>, threads: Int = 1) {
        Self.computeGram(atoms, atomCount, dimension, into: out, threads: openblas_get_num_threads() == 1 ? threads : 1)
    }

    // MARK: - Decoding

    /// Reconstructs the coded vectors: row b = sum_k coefficients[b, k] * d_{indices[b, k]}.
    ///
    /// - Returns: (count, m) row-major.
    /// - Throws: `SparseCodingError.dictionaryMismatch` when the codes were made for a
    ///   dictionary of another size.
    public func decode(_ codes: SparseCodes) throws -> [Float] {
        guard codes.atomCount == atomCount else {
            throw SparseCodingError.dictionaryMismatch(codesAtomCount: codes.atomCount, dictionaryAtomCount: atomCount)
        }
        var out = [Float](repeating: 0, count: codes.count * dimension)  // (B, m)
        out.withUnsafeMutableBufferPointer { o in
            codes.indices.withUnsafeBufferPointer { idx in
                codes.coefficients.withUnsafeBufferPointer { coef in
                    guard let dst = o.baseAddress, let ip = idx.baseAddress, let cp = coef.baseAddress else { return }
                    decode(count: codes.count, sparsity: codes.sparsity, indices: ip, coefficients: cp, into: dst)
                }
            }
        }
        return out
    }

    /// Pointer form of ``decode(_:)`` for callers that own their buffers.
    ///
    /// - Parameters:
    ///   - indices: (count, sparsity); every index must be below ``atomCount`` (a
    ///     ``SparseCodes`` value guarantees it).
    ///   - coefficients: (count, sparsity)
    ///   - out: (count, m), overwritten.
    public func decode(count: Int, sparsity: Int, indices: UnsafePointer<UInt16>,
                       coefficients: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let m = dimension
        guard count > 0, sparsity > 0 else { return }
        atoms.withUnsafeBufferPointer { d in
            guard let base = d.baseAddress else { return }
            for b in 0..<count {
                let o = out + b * m
                o.initialize(repeating: 0, count: m)
                for k in 0..<sparsity {
                    let c = coefficients[b * sparsity + k]
                    let atom = base + Int(indices[b * sparsity + k]) * m
                    for i in 0..<m { o[i] += c * atom[i] }
                }
            }
        }
    }
}
