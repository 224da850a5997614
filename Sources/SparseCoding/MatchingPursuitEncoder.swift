import CBLAS
import Dispatch
import Foundation

/// Encodes batches of vectors as sparse codes over a ``SparseDictionary`` with Matching
/// Pursuit (or, as an option, Orthogonal Matching Pursuit).
///
/// The batch is processed in chunks of rows. For each chunk one sgemm gives the
/// correlations of every row with every atom, (rows, m) x (m, N) -> (rows, N); each MP step
/// then updates a row's correlations with one Gram row instead of recomputing them from
/// the residual. Chunks are shared out among worker threads.
///
/// A serving encoder keeps no Gram matrix (``Options/keepsGram``). A batch too small to
/// repay one (a decoded token's few vectors) takes no BLAS call: its correlations and the
/// Gram rows of the atoms it chooses come from the panel kernel
/// (``PursuitKernels/correlate(panels:atomCount:dimension:rows:rowCount:into:)``), with
/// rows stepping together so that they share the dictionary's reads (MP a chunk's rows,
/// OMP four at a time).
public struct MatchingPursuitEncoder: Sendable {
    /// Settings of an encoder.
    public struct Options: Sendable, Equatable {
        /// s, the (index, coefficient) pairs stored per vector.
        public var sparsity: Int
        /// MP (the paper's, default) or OMP.
        public var algorithm: PursuitAlgorithm
        /// Rows coded per sgemm. Each thread holds a chunkRows * N float buffer (4 MB at
        /// 256 rows and N = 4096). With m = 64, s = 8, 256 measured within a few percent of
        /// the best of 64 ... 1024 at N = 1024 and 4096; 1024 was 5-15% slower.
        public var chunkRows: Int
        /// Threads, each coding whole chunks (sgemm and pursuit). They pay in full only when
        /// OpenBLAS runs single-threaded (`OPENBLAS_NUM_THREADS=1` or
        /// `openblas_set_num_threads(1)`): 2 threads then measured 1.9-2.0x one thread.
        /// With OpenBLAS's own pool running, its threads keep spinning between calls and
        /// take the cores these threads need (1.0-1.1x).
        public var threads: Int
        /// Whether the encoder keeps the dictionary's Gram matrix (N x N floats) for its
        /// life. Without it (`false`) a batch of at least N / s rows computes the matrix for
        /// the call only, and a smaller batch (a decoded token's few vectors) computes the
        /// Gram row of each chosen atom when it needs it (N m multiply-adds per step).
        public var keepsGram: Bool

        /// - Parameters:
        ///   - sparsity: s, pairs per vector (at least 1; at most N for OMP).
        ///   - algorithm: `.matchingPursuit` unless OMP's better fit is worth its cost.
        ///   - chunkRows: rows per correlation sgemm (values below 1 count as 1).
        ///   - threads: worker threads (values below 1 count as 1; small batches use fewer).
        ///   - keepsGram: keep the Gram matrix (training, benchmarks) or not (serving).
        public init(sparsity: Int, algorithm: PursuitAlgorithm = .matchingPursuit,
                    chunkRows: Int = 256, threads: Int = MatchingPursuitEncoder.defaultThreads, keepsGram: Bool = true) {
            self.sparsity = sparsity
            self.algorithm = algorithm
            self.chunkRows = chunkRows
            self.threads = threads
            self.keepsGram = keepsGram
        }
    }

    /// The cores of this machine: the default for ``Options/threads``.
    public static let defaultThreads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Below this much work (rows * s * N correlation updates, about 50 µs) a second
    /// thread costs more to wake than it saves.
    static let minWorkPerThread = 1 << 17

    /// The dictionary codes refer to.
    public let dictionary: SparseDictionary
    /// The settings, as given (see ``Options``).
    public let options: Options
    /// (N, N) Gram matrix of the dictionary, when kept (see ``Options/keepsGram``).
    private let gram: [Float]?

    /// Makes an encoder, computing the dictionary's Gram matrix if it is not cached yet.
    ///
    /// - Throws: `SparseCodingError.badSparsity` for s < 1, s > ``PackedCodes/maxSparsity``
    ///   (or s > N with OMP),
    ///   `.gramTooLarge` when N * N floats exceed ``SparseDictionary/maxGramBytes``.
    public init(dictionary: SparseDictionary, options: Options) throws {
        let s = options.sparsity
        guard s >= 1, s <= PackedCodes.maxSparsity, options.algorithm == .matchingPursuit || s <= dictionary.atomCount else {
            throw SparseCodingError.badSparsity(sparsity: s, atomCount: dictionary.atomCount,
                                                algorithm: options.algorithm.rawValue)
        }
        self.dictionary = dictionary
        self.options = options
        if options.keepsGram {
            self.gram = try dictionary.gram()
        } else {
            guard dictionary.gramByteCount <= SparseDictionary.maxGramBytes else {
                throw SparseCodingError.gramTooLarge(atomCount: dictionary.atomCount, bytes: dictionary.gramByteCount,
                                                     limit: SparseDictionary.maxGramBytes)
            }
            self.gram = nil
        }
    }

    // MARK: - Encoding

    /// Codes `count` vectors.
    ///
    /// - Parameter vectors: (count, m) row-major.
    /// - Throws: `SparseCodingError.badVectorCount` when `vectors` is not count x m values.
    public func encode(_ vectors: [Float], count: Int) throws -> SparseCodes {
        try checkShape(vectors, count: count)
        let s = options.sparsity
        var indices = [UInt16](repeating: 0, count: count * s)  // (B, s)
        var coefficients = [Float](repeating: 0, count: count * s)  // (B, s)
        vectors.withUnsafeBufferPointer { x in
            indices.withUnsafeMutableBufferPointer { idx in
                coefficients.withUnsafeMutableBufferPointer { coef in
                    guard let xp = x.baseAddress, let ip = idx.baseAddress, let cp = coef.baseAddress else { return }
                    run(count: count, vectors: xp, indices: ip, coefficients: cp, threads: options.threads, observe: nil)
                }
            }
        }
        return SparseCodes(unchecked: count, sparsity: s, atomCount: dictionary.atomCount,
                           indices: indices, coefficients: coefficients)
    }

    /// Pointer form of ``encode(_:count:)`` for callers that own their buffers.
    ///
    /// - Parameters:
    ///   - vectors: (count, m) row-major.
    ///   - indices: (count, s), overwritten with atom indices below N.
    ///   - coefficients: (count, s), overwritten.
    public func encode(count: Int, vectors: UnsafePointer<Float>, indices: UnsafeMutablePointer<UInt16>,
                       coefficients: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        run(count: count, vectors: vectors, indices: indices, coefficients: coefficients,
            threads: options.threads, observe: nil)
    }

    // MARK: - Tracing (tests and diagnostics)

    /// Codes `count` vectors on one thread while checking every step against a direct
    /// computation: the residual x - sum_j c_j d_j rebuilt from the pairs so far, and its
    /// correlations with every atom recomputed from it. Costs O(N m) per step; for tests
    /// and diagnostics, not for serving.
    ///
    /// - Parameter vectors: (count, m) row-major.
    public func trace(_ vectors: [Float], count: Int) throws -> PursuitTrace {
        try checkShape(vectors, count: count)
        let s = options.sparsity, n = dictionary.atomCount, m = dictionary.dimension
        var indices = [UInt16](repeating: 0, count: count * s)  // (B, s)
        var coefficients = [Float](repeating: 0, count: count * s)  // (B, s)
        var norms = [Float](repeating: 0, count: count * (s + 1))  // (B, s + 1)
        var drift = [Float](repeating: 0, count: count * s)  // (B, s)
        let atoms = dictionary.atoms
        vectors.withUnsafeBufferPointer { x in
            indices.withUnsafeMutableBufferPointer { idx in
                coefficients.withUnsafeMutableBufferPointer { coef in
                    norms.withUnsafeMutableBufferPointer { nr in
                        drift.withUnsafeMutableBufferPointer { dr in
                            atoms.withUnsafeBufferPointer { d in
                                guard let xp = x.baseAddress, let ip = idx.baseAddress, let cp = coef.baseAddress,
                                      let np = nr.baseAddress, let dp = dr.baseAddress, let ap = d.baseAddress
                                else { return }
                                var residual = [Double](repeating: 0, count: m)  // (m)
                                run(count: count, vectors: xp, indices: ip, coefficients: cp, threads: 1) { row, corr in
                                    let xr = xp + row * m
                                    np[row * (s + 1)] = Float(Self.norm((0..<m).map { Double(xr[$0]) }))
                                    return { k in
                                        for i in 0..<m { residual[i] = Double(xr[i]) }
                                        for j in 0...k {
                                            let c = Double(cp[row * s + j]), atom = ap + Int(ip[row * s + j]) * m
                                            for i in 0..<m { residual[i] -= c * Double(atom[i]) }
                                        }
                                        np[row * (s + 1) + k + 1] = Float(Self.norm(residual))
                                        var worst = 0.0
                                        for a in 0..<n {
                                            var dot = 0.0
                                            for i in 0..<m { dot += residual[i] * Double(ap[a * m + i]) }
                                            worst = max(worst, abs(dot - Double(corr[a])))
                                        }
                                        dp[row * s + k] = Float(worst)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let codes = SparseCodes(unchecked: count, sparsity: s, atomCount: n, indices: indices, coefficients: coefficients)
        return PursuitTrace(codes: codes, residualNorms: norms, correlationDrift: drift)
    }

    private static func norm(_ v: [Double]) -> Double {
        v.reduce(0) { $0 + $1 * $1 }.squareRoot()
    }

    // MARK: - Driver

    private func checkShape(_ vectors: [Float], count: Int) throws {
        let m = dictionary.dimension
        guard count >= 0, !count.multipliedReportingOverflow(by: m).overflow, vectors.count == count * m else {
            throw SparseCodingError.badVectorCount(elements: vectors.count, dimension: m, count: count)
        }
    }

    /// What the workers of one `run` share. Safe to send: the vectors, atoms and Gram
    /// matrix are only read; each worker writes only its own correlation buffer and the
    /// output rows of the chunks it took from `queue`; `concurrentPerform` returns when
    /// all are done.
    private struct Shared: @unchecked Sendable {
        /// (workers, chunk, N): one correlation buffer per worker.
        let corr: UnsafeMutablePointer<Float>
        /// (N, m)
        let atoms: UnsafePointer<Float>
        /// the atoms in panels (``SparseDictionary/panels()``), for the kernels without a Gram matrix (nil with one)
        let panels: UnsafePointer<Float>?
        /// (N, N), or nil: each step computes the Gram row it needs
        let gram: UnsafePointer<Float>?
        /// (count, m)
        let vectors: UnsafePointer<Float>
        /// (count, s)
        let indices: UnsafeMutablePointer<UInt16>
        /// (count, s)
        let coefficients: UnsafeMutablePointer<Float>
        let queue: ChunkQueue
    }

    /// Hands out chunk numbers to workers as they become free, so that a worker slowed
    /// by another process does not hold up the batch. One lock per chunk (~1 ms of work).
    private final class ChunkQueue: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0
        private let count: Int

        init(count: Int) { self.count = count }

        func take() -> Int? {
            lock.lock()
            defer { lock.unlock() }
            guard next < count else { return nil }
            next += 1
            return next - 1
        }
    }

    /// Codes every row. The batch is cut into chunks; each worker takes chunks in turn and
    /// for each runs one sgemm for its correlations, (rows, m) x (m, N), then the per-row
    /// pursuit. Splitting whole chunks rather than the rows of one chunk lets both the
    /// sgemm and the loops run in parallel, and keeps each worker's buffer in its own cache.
    /// `observe(row, corr)` (tracing only; forces one worker) returns the observer of that
    /// row's steps.
    private func run(count: Int, vectors: UnsafePointer<Float>, indices: UnsafeMutablePointer<UInt16>,
                     coefficients: UnsafeMutablePointer<Float>, threads: Int,
                     observe: ((_ row: Int, _ corr: UnsafePointer<Float>) -> PursuitKernels.Observer)?) {
        let n = dictionary.atomCount, s = options.sparsity
        let updates = count.multipliedReportingOverflow(by: s * n)
        let byWork = updates.overflow ? Int.max : max(1, updates.partialValue / Self.minWorkPerThread)
        let workers = observe != nil ? 1 : max(1, min(threads, count, byWork))
        // Every worker gets at least one chunk, however small the batch.
        let chunk = max(1, min(options.chunkRows, (count + workers - 1) / workers))
        let chunks = (count + chunk - 1) / chunk
        // Without a kept Gram matrix: one for this call when the batch repays it, else Gram
        // rows on demand. The correlations and a call's Gram come from the scratch pool: a
        // prefill codes every layer, and fresh blocks of 2-4 MB per layer were mapped and
        // faulted in page by page each time.
        let transient = gram == nil && count * s >= n && dictionary.gramByteCount <= SparseDictionary.maxGramBytes
        // Without a Gram matrix, the kernels read the atoms in panels.
        let panels = gram == nil && !transient ? dictionary.panels() : nil
        func code(gram g: UnsafePointer<Float>?, corr: UnsafeMutablePointer<Float>) {
            dictionary.atoms.withUnsafeBufferPointer { d in
                withExtendedLifetime(panels) {
                    guard let dp = d.baseAddress else { return }
                    let shared = Shared(corr: corr, atoms: dp, panels: panels?.baseAddress, gram: g,
                                        vectors: vectors, indices: indices, coefficients: coefficients,
                                        queue: ChunkQueue(count: chunks))
                    if workers == 1 {
                        work(worker: 0, shared: shared, chunk: chunk, count: count, observe: observe)
                    } else {
                        DispatchQueue.concurrentPerform(iterations: workers) { w in
                            work(worker: w, shared: shared, chunk: chunk, count: count, observe: nil)
                        }
                    }
                }
            }
        }
        ScratchPool.shared.withFloats(workers * chunk * n) { corr in
            if transient {
                ScratchPool.shared.withFloats(n * n) { g in
                    dictionary.computeGram(into: g, threads: workers)
                    code(gram: g, corr: corr)
                }
            } else if let gram {
                gram.withUnsafeBufferPointer { code(gram: $0.baseAddress, corr: corr) }
            } else {
                code(gram: nil, corr: corr)
            }
        }
    }

    /// One worker: takes chunks until none are left.
    private func work(worker w: Int, shared: Shared, chunk: Int, count: Int,
                      observe: ((Int, UnsafePointer<Float>) -> PursuitKernels.Observer)?) {
        let n = dictionary.atomCount, m = dictionary.dimension, s = options.sparsity
        let corr = shared.corr + w * chunk * n  // (chunk, N)
        let omp = options.algorithm == .orthogonal, gramFree = shared.gram == nil
        // Without a Gram matrix the batch is small (fewer than N / s rows): no BLAS. MP's
        // rows step together, (chunk, N) Gram rows, (chunk, m) chosen atoms, (chunk) next
        // atoms; OMP's step four at a time, each with its own scratch and (s, N) Gram rows,
        // plus (4, N) rows of one step and (4, m) their atoms; traced, OMP takes one row's
        // Gram rows on demand, (s, N).
        let lanes = omp && gramFree && observe == nil ? PursuitKernels.ompLockstepRows : 1
        let floatCount = PursuitKernels.OMPScratch.floatCount(atomCount: n, sparsity: s)
        let intCount = PursuitKernels.OMPScratch.intCount(sparsity: s)
        let floats: UnsafeMutablePointer<Float>? = omp ? .allocate(capacity: lanes * floatCount) : nil
        let ints: UnsafeMutablePointer<Int>? = omp ? .allocate(capacity: lanes * intCount) : nil
        var scratches: [PursuitKernels.OMPScratch] = []
        if let floats, let ints {
            scratches = (0..<lanes).map {
                PursuitKernels.OMPScratch(floats: floats + $0 * floatCount, ints: ints + $0 * intCount, atomCount: n, sparsity: s)
            }
        }
        let onDemand = PursuitKernels.OMPScratch.onDemandRows(sparsity: s)
        let gramRows: UnsafeMutablePointer<Float>? = gramFree ? .allocate(capacity: (omp ? lanes * onDemand : chunk) * n) : nil
        let chosen: UnsafeMutablePointer<Float>? = gramFree ? .allocate(capacity: (omp ? lanes : chunk) * m) : nil
        let best: UnsafeMutablePointer<Int>? = gramFree && !omp ? .allocate(capacity: chunk) : nil
        let fresh: UnsafeMutablePointer<Float>? = lanes > 1 ? .allocate(capacity: lanes * n) : nil
        defer {
            floats?.deallocate()
            ints?.deallocate()
            gramRows?.deallocate()
            chosen?.deallocate()
            best?.deallocate()
            fresh?.deallocate()
        }
        let scratch = scratches.first
        while let c = shared.queue.take() {
            let start = c * chunk, rows = min(chunk, count - start)
            if let panels = shared.panels, let gramRows, let chosen, observe == nil {
                if let fresh {
                    var r0 = 0
                    while r0 < rows {
                        let b = start + r0, group = min(lanes, rows - r0)
                        PursuitKernels.orthogonalMatchingPursuitLockstep(
                            vectors: shared.vectors + b * m, rows: group, atoms: shared.atoms, panels: panels, atomCount: n,
                            dimension: m, sparsity: s, corr: corr,
                            scratch: .init(vectors: scratches, gramRows: gramRows, fresh: fresh, chosen: chosen),
                            indices: shared.indices + b * s, coefficients: shared.coefficients + b * s)
                        r0 += group
                    }
                } else if let best {
                    PursuitKernels.matchingPursuitLockstep(
                        vectors: shared.vectors + start * m, rows: rows, atoms: shared.atoms, panels: panels, atomCount: n,
                        dimension: m, sparsity: s, corr: corr, scratch: .init(gramRows: gramRows, chosen: chosen, best: best),
                        indices: shared.indices + start * s, coefficients: shared.coefficients + start * s)
                }
                continue
            }
            if let panels = shared.panels {
                PursuitKernels.correlate(panels: panels, atomCount: n, dimension: m, rows: shared.vectors + start * m,
                                         rowCount: rows, into: corr)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(n), Int32(m),
                            1, shared.vectors + start * m, Int32(m), shared.atoms, Int32(m), 0, corr, Int32(n))
            }
            var first = 0
            if let gram = shared.gram, !omp, observe == nil {
                // MP with a Gram matrix: rows two at a time (``PursuitKernels/matchingPursuitPair``).
                while first + 2 <= rows {
                    let b = start + first
                    PursuitKernels.matchingPursuitPair(corr: corr + first * n, gram: gram, atomCount: n, sparsity: s,
                                                       indices: shared.indices + b * s, coefficients: shared.coefficients + b * s)
                    first += 2
                }
            }
            for r in first..<rows {
                let b = start + r, row = corr + r * n
                let idx = shared.indices + b * s, coef = shared.coefficients + b * s
                if let scratch, let gram = shared.gram {
                    PursuitKernels.orthogonalMatchingPursuit(corr: row, gram: gram, atomCount: n, sparsity: s,
                                                             indices: idx, coefficients: coef, scratch: scratch,
                                                             observer: observe?(b, row))
                } else if let scratch, let gramRows, let panels = shared.panels {
                    PursuitKernels.orthogonalMatchingPursuit(corr: row, atoms: shared.atoms, panels: panels, dimension: m,
                                                             rows: gramRows, atomCount: n, sparsity: s, indices: idx,
                                                             coefficients: coef, scratch: scratch, observer: observe?(b, row))
                } else if let gramRow = gramRows, let panels = shared.panels {
                    PursuitKernels.matchingPursuit(corr: row, atoms: shared.atoms, panels: panels, dimension: m,
                                                   gramRow: gramRow, atomCount: n, sparsity: s, indices: idx,
                                                   coefficients: coef, observer: observe?(b, row))
                } else if let gram = shared.gram {
                    PursuitKernels.matchingPursuit(corr: row, gram: gram, atomCount: n, sparsity: s,
                                                   indices: idx, coefficients: coef, observer: observe?(b, row))
                }
            }
        }
    }
}
