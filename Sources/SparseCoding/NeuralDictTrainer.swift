import CBLAS
import Dispatch
import Foundation

/// Trains the offline dictionary of the CSR paper ("NeuralDict") from sample vectors.
///
/// W_D (m x N) is a bias-free linear layer whose columns are the atoms; here it is stored
/// transposed, as the (N, m) rows of a ``SparseDictionary``, D = W_D^T. Training:
/// 1. hold out ``NeuralDictOptions/heldOutFraction`` of the vectors (never trained on);
/// 2. initialise the atoms with spherical k-means (see `KMeans`);
/// 3. take ``NeuralDictOptions/steps`` Adam steps on minibatches of the loss
///    L = MSE(x, W_D r(x, W_D, s)) + beta (1/N^2) ||I - W_D^T W_D||_F^2,
///    beta = clamp(diversityScale * L_mse / L_div, 0, 1) (a number, not differentiated),
///    r the Matching Pursuit code at sparsity s under the current atoms, and every atom
///    renormalised to unit length after each step; every 25 steps, atoms that nearly
///    repeat another or went unused are replaced (not in the paper, see
///    ``NeuralDictOptions/replaceAtoms``);
/// 4. measure the coding error of the train and held-out sets before and after.
public enum NeuralDictTrainer {
    // MARK: - Training

    /// Trains N atoms for vectors of dimension m.
    ///
    /// - Parameters:
    ///   - vectors: (count, dimension) row-major training data, all finite.
    ///   - progress: called on the calling thread after every k-means iteration and every step.
    /// - Returns: the dictionary (the last one, or the best on the held-out vectors, see
    ///   ``NeuralDictOptions/keepBestHeldOut``) and its report.
    /// - Throws: `NeuralDictError` for bad options or data (too few vectors for N atoms after
    ///   the held-out split, NaN or infinity, ...) and when training diverges;
    ///   `SparseCodingError.gramTooLarge` when N is too large for the encoder's Gram matrix.
    public static func train(vectors: [Float], count: Int, dimension m: Int, options: NeuralDictOptions,
                             progress: ((NeuralDictProgress) -> Void)? = nil) throws -> (dictionary: SparseDictionary, report: NeuralDictReport) {
        let started = DispatchTime.now().uptimeNanoseconds
        try options.validate()
        try checkShape(vectors, count: count, dimension: m)
        try checkFinite(vectors, dimension: m)
        let n = options.atomCount, s = options.sparsity
        guard n * n * MemoryLayout<Float>.size <= SparseDictionary.maxGramBytes else {
            throw SparseCodingError.gramTooLarge(atomCount: n, bytes: n * n * MemoryLayout<Float>.size,
                                                 limit: SparseDictionary.maxGramBytes)
        }
        let testCount = heldOutCount(count: count, fraction: options.heldOutFraction)
        let trainCount = count - testCount
        guard trainCount >= n else {
            throw NeuralDictError.tooFewVectors(count: count, heldOut: testCount, atomCount: n)
        }

        // MARK: Held-out split
        var rng = Xoshiro256StarStar(seed: options.seed)
        let split = heldOutSplit(count: count, heldOut: testCount, using: &rng)
        let test = gather(vectors, rows: split.test, dimension: m)  // (testCount, m)
        let train = gather(vectors, rows: split.train, dimension: m)  // (trainCount, m)

        // MARK: k-means initialisation
        // `train` is in random order, so its first rows are a uniform sample.
        let kmeansCount = min(trainCount, max(n, options.kmeansMaxVectors))
        var dictionary = try train.withUnsafeBufferPointer { tp -> SparseDictionary in
            guard let base = tp.baseAddress else { throw NeuralDictError.tooFewVectors(count: count, heldOut: testCount, atomCount: n) }
            return try KMeans.fit(vectors: base, count: kmeansCount, dimension: m, atomCount: n,
                                  iterations: options.kmeansIterations, threads: options.threads) { iteration, mse, diversity in
                progress?(NeuralDictProgress(step: 0, totalSteps: options.steps,
                                             phase: .kmeans(iteration: iteration, of: options.kmeansIterations),
                                             mse: mse, diversity: diversity, beta: 0, heldOutMSE: nil))
            }
        }
        let initialTrain = try codingError(train, count: trainCount, dictionary: dictionary, sparsity: s, threads: options.threads)
        let initialTest = try codingError(test, count: testCount, dictionary: dictionary, sparsity: s, threads: options.threads)

        // MARK: Gradient steps
        var sampler = MinibatchSampler(count: trainCount, using: &rng)
        var batch = Minibatch(rows: min(options.batchSize, trainCount), dimension: m, sparsity: s)
        var atoms = dictionary.atoms  // (N, m) the parameters, D = W_D^T
        var adam = AdamOptimizer(parameterCount: n * m, learningRate: options.learningRate)
        var gradient = [Float](repeating: 0, count: n * m)  // (N, m)
        var usage = [Int](repeating: 0, count: n)  // (N) pairs choosing each atom since the last replacement
        var replacedAtoms = 0
        var best = (dictionary: dictionary, test: initialTest, step: 0)
        var last = best
        for step in 1..<(options.steps + 1) {
            sampler.fill(&batch, from: train, using: &rng)
            let encoder = try MatchingPursuitEncoder(dictionary: dictionary, options: .init(sparsity: s, threads: options.threads))
            let loss = try lossAndGradient(&batch, encoder: encoder, diversityScale: options.diversityScale, gradient: &gradient)
            guard loss.mse.isFinite, loss.diversity.isFinite else {
                throw NeuralDictError.diverged(step: step, mse: loss.mse, diversity: loss.diversity)
            }
            for i in batch.indices { usage[Int(i)] += 1 }
            atoms.withUnsafeMutableBufferPointer { a in
                gradient.withUnsafeBufferPointer { g in
                    guard let ap = a.baseAddress, let gp = g.baseAddress else { return }
                    adam.update(ap, gradient: gp)
                }
            }
            if options.replaceAtoms && replacesAtoms(after: step, of: options.steps) {
                let replace = atomsToReplace(gram: try dictionary.gram(), atomCount: n, usage: usage,
                                             coherence: options.duplicateCoherence)
                replacedAtoms += replaceAtoms(replace, in: &atoms, codedWith: dictionary, batch: batch, adam: &adam)
                for i in usage.indices { usage[i] = 0 }
            }
            // Back to unit atoms (SparseDictionary normalises every row).
            do {
                dictionary = try SparseDictionary(atoms: atoms, atomCount: n, dimension: m)
            } catch {
                throw NeuralDictError.diverged(step: step, mse: loss.mse, diversity: loss.diversity)
            }
            atoms = dictionary.atoms

            var heldOut: Double?
            if step % options.evaluateEvery == 0 || step == options.steps {
                let e = try codingError(test, count: testCount, dictionary: dictionary, sparsity: s, threads: options.threads)
                heldOut = e.mse
                last = (dictionary, e, step)
                if e.mse < best.test.mse { best = last }
            }
            progress?(NeuralDictProgress(step: step, totalSteps: options.steps, phase: .training, mse: loss.mse,
                                         diversity: loss.diversity, beta: loss.beta, heldOutMSE: heldOut))
        }

        // MARK: Report
        let chosen = options.keepBestHeldOut ? best : last
        let finalTrain = chosen.step == 0
            ? initialTrain
            : try codingError(train, count: trainCount, dictionary: chosen.dictionary, sparsity: s, threads: options.threads)
        let report = NeuralDictReport(
            trainMSE: finalTrain.mse, testMSE: chosen.test.mse,
            initialTrainMSE: initialTrain.mse, initialTestMSE: initialTest.mse,
            trainRelativeError: finalTrain.relative, testRelativeError: chosen.test.relative,
            initialTestRelativeError: initialTest.relative,
            trainCount: trainCount, testCount: testCount, steps: options.steps, selectedStep: chosen.step,
            replacedAtoms: replacedAtoms,
            seconds: Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9)
        return (chosen.dictionary, report)
    }

    // MARK: - One step

    /// The minibatch loss and its gradient with respect to the atoms D = W_D^T.
    ///
    /// **How the gradient goes through Matching Pursuit.** MP's code r(x, W) has two parts:
    /// the support (which atoms, in which order) comes from argmaxes and has no gradient; the
    /// coefficients c_k = <R_{k-1}, d_{i_k}> do depend on W, through every earlier residual.
    /// This step treats the whole code, support and coefficients, as a constant: MP runs on
    /// the current atoms without gradient, and L_mse = (1/(B m)) ||X - W R||_F^2 is then
    /// differentiated in W alone, dL_mse/dW = -(2/(B m)) (X - W R) R^T. R (N x B) has s
    /// non-zeros per column, so it is never formed: each pair (i_k, c_k) of vector b adds
    /// -(2/(B m)) c_k e_b to atom i_k, with e_b = x_b - x^_b the residual (O(B s m) work).
    ///
    /// Why: this is the alternating minimisation of classic dictionary learning (MOD, K-SVD,
    /// Mairal et al.'s online learning) taken one gradient step at a time: code with the
    /// atoms fixed, then improve the atoms with the code fixed. Every step lowers the loss
    /// of the codes it was given, and the next step's MP recodes with the better atoms and
    /// may change the support. Differentiating the coefficients too would need the s
    /// residuals of every vector kept and back-propagated through, for a derivative that
    /// holds only while the support stays the same, which a step of a redundant dictionary
    /// routinely changes. The paper's linear-layer form W_D r(x, W_D, s) does not say which
    /// it does; the code-constant gradient is the standard, cheap choice.
    ///
    /// The diversity term: d/dW ||I - W^T W||_F^2 = -4 W (I - W^T W); in D = W^T, with
    /// G = D D^T = W^T W, that is -4 (I - G) D = -4 (D - D (D^T D)): two small sgemms
    /// (see `diversityLoss`).
    ///
    /// - Parameters:
    ///   - batch: the vectors in; their codes and per-row squared errors out.
    ///   - gradient: (N, m), overwritten with dL_mse/dD + beta dL_div/dD.
    /// - Returns: L_mse (per element), L_div ((1/N^2) ||I - G||_F^2) and the beta used.
    static func lossAndGradient(_ batch: inout Minibatch, encoder: MatchingPursuitEncoder, diversityScale: Float,
                                gradient: inout [Float]) throws -> (mse: Double, diversity: Double, beta: Double) {
        let dictionary = encoder.dictionary
        let n = dictionary.atomCount, m = dictionary.dimension, s = encoder.options.sparsity, b = batch.rows
        var sse = 0.0
        batch.withPointers { x, idx, coef, rowError in
            encoder.encode(count: b, vectors: x, indices: idx, coefficients: coef)
            gradient.withUnsafeMutableBufferPointer { gBuf in
                dictionary.atoms.withUnsafeBufferPointer { dBuf in
                    guard let grad = gBuf.baseAddress, let d = dBuf.baseAddress else { return }
                    grad.update(repeating: 0, count: n * m)
                    let scale = -2 / Float(b * m)
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: m) { eBuf in
                        guard let e = eBuf.baseAddress else { return }
                        for row in 0..<b {
                            // e = x - sum_k c_k d_{i_k}: the residual of the code.
                            let xr = x + row * m
                            for i in 0..<m { e[i] = xr[i] }
                            for k in 0..<s {
                                let c = coef[row * s + k], atom = d + Int(idx[row * s + k]) * m
                                for i in 0..<m { e[i] -= c * atom[i] }
                            }
                            var rowSquares: Float = 0
                            for i in 0..<m { rowSquares += e[i] * e[i] }
                            rowError[row] = rowSquares
                            sse += Double(rowSquares)
                            // (X - W R) R^T, one pair at a time.
                            for k in 0..<s {
                                let c = scale * coef[row * s + k], g = grad + Int(idx[row * s + k]) * m
                                for i in 0..<m { g[i] += c * e[i] }
                            }
                        }
                    }
                }
            }
        }
        let mse = sse / Double(b * m)
        let (diversity, cross) = diversityLoss(of: dictionary)
        let beta = diversity > 0 ? min(1, max(0, Double(diversityScale) * mse / diversity)) : 0
        if beta > 0 {
            // grad += beta * -(4/N^2) (I - G) D = -k D + k D (D^T D), with k = 4 beta / N^2.
            let k = Float(4 * beta / Double(n * n))
            gradient.withUnsafeMutableBufferPointer { gBuf in
                dictionary.atoms.withUnsafeBufferPointer { dBuf in
                    cross.withUnsafeBufferPointer { cBuf in
                        guard let grad = gBuf.baseAddress, let d = dBuf.baseAddress, let c = cBuf.baseAddress else { return }
                        for i in 0..<(n * m) { grad[i] -= k * d[i] }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(m), Int32(m),
                                    k, d, Int32(m), c, Int32(m), 1, grad, Int32(m))
                    }
                }
            }
        }
        return (mse, diversity, beta)
    }

    /// L_div = (1/N^2) ||I - D D^T||_F^2, and C = D^T D.
    ///
    /// Both go through the (m, m) matrix C rather than the (N, N) Gram matrix G = D D^T:
    /// ||I - G||_F^2 = N - 2 tr(G) + ||G||_F^2 with tr(G) = tr(C) and ||G||_F^2 = ||C||_F^2,
    /// and G D = D C. That is N m^2 work instead of N^2 m, 64x less at N = 4096, m = 64.
    /// The sum cancels when N <= m and the atoms are nearly orthonormal (about 1e-7 N
    /// absolute), which only makes a near-zero loss noisy; it is clamped at 0.
    ///
    /// - Returns: the loss and C, (m, m).
    static func diversityLoss(of dictionary: SparseDictionary) -> (loss: Double, cross: [Float]) {
        let n = dictionary.atomCount, m = dictionary.dimension
        var c = [Float](repeating: 0, count: m * m)  // (m, m)
        dictionary.atoms.withUnsafeBufferPointer { d in
            c.withUnsafeMutableBufferPointer { out in
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(m), Int32(n),
                            1, d.baseAddress, Int32(m), d.baseAddress, Int32(m), 0, out.baseAddress, Int32(m))
            }
        }
        var trace = 0.0, squares = 0.0
        for i in 0..<m { trace += Double(c[i * m + i]) }
        for v in c { squares += Double(v) * Double(v) }
        return (max(0, Double(n) - 2 * trace + squares) / Double(n * n), c)
    }

    // MARK: - Measuring a dictionary

    /// The error of coding `vectors` with `dictionary` by Matching Pursuit at sparsity s.
    ///
    /// - Parameter vectors: (count, m) row-major, m the dictionary's dimension.
    /// - Returns: mse, sum ||x - x^||^2 / (count * m); relative, sum ||x - x^||^2 / sum ||x||^2
    ///   (0 when every vector is zero). Both 0 for no vectors.
    /// - Throws: `NeuralDictError.badVectorShape` / `.dimensionMismatch` for a bad array,
    ///   `SparseCodingError.badSparsity` for a bad s.
    public static func codingError(vectors: [Float], count: Int, dictionary: SparseDictionary, sparsity: Int,
                                   threads: Int = MatchingPursuitEncoder.defaultThreads) throws -> (mse: Double, relative: Double) {
        guard count >= 0, !count.multipliedReportingOverflow(by: dictionary.dimension).overflow,
              vectors.count == count * dictionary.dimension
        else {
            if count > 0, vectors.count % count == 0 {
                throw NeuralDictError.dimensionMismatch(vectors: vectors.count / count, dictionary: dictionary.dimension)
            }
            throw NeuralDictError.badVectorShape(elements: vectors.count, count: count, dimension: dictionary.dimension)
        }
        return try codingError(vectors, count: count, dictionary: dictionary, sparsity: sparsity, threads: threads)
    }

    /// Rows coded per encoder call when measuring: bounds the codes held at once.
    static let measureChunkRows = 16_384

    /// ``codingError(vectors:count:dictionary:sparsity:threads:)`` without the shape check.
    static func codingError(_ vectors: [Float], count: Int, dictionary: SparseDictionary, sparsity s: Int,
                            threads: Int) throws -> (mse: Double, relative: Double) {
        let encoder = try MatchingPursuitEncoder(dictionary: dictionary, options: .init(sparsity: s, threads: threads))
        guard count > 0 else { return (0, 0) }
        let m = dictionary.dimension, chunk = min(count, measureChunkRows)
        var indices = [UInt16](repeating: 0, count: chunk * s)  // (chunk, s)
        var coefficients = [Float](repeating: 0, count: chunk * s)  // (chunk, s)
        var sse = 0.0, energy = 0.0
        vectors.withUnsafeBufferPointer { xBuf in
            indices.withUnsafeMutableBufferPointer { iBuf in
                coefficients.withUnsafeMutableBufferPointer { cBuf in
                    dictionary.atoms.withUnsafeBufferPointer { dBuf in
                        guard let x = xBuf.baseAddress, let idx = iBuf.baseAddress, let coef = cBuf.baseAddress,
                              let d = dBuf.baseAddress else { return }
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: m) { eBuf in
                            guard let e = eBuf.baseAddress else { return }
                            for start in stride(from: 0, to: count, by: chunk) {
                                let rows = min(chunk, count - start)
                                encoder.encode(count: rows, vectors: x + start * m, indices: idx, coefficients: coef)
                                for r in 0..<rows {
                                    let xr = x + (start + r) * m
                                    for i in 0..<m { e[i] = xr[i] }
                                    for k in 0..<s {
                                        let c = coef[r * s + k], atom = d + Int(idx[r * s + k]) * m
                                        for i in 0..<m { e[i] -= c * atom[i] }
                                    }
                                    var rowError = 0.0, rowEnergy = 0.0
                                    for i in 0..<m {
                                        rowError += Double(e[i]) * Double(e[i])
                                        rowEnergy += Double(xr[i]) * Double(xr[i])
                                    }
                                    sse += rowError
                                    energy += rowEnergy
                                }
                            }
                        }
                    }
                }
            }
        }
        return (sse / Double(count * m), energy > 0 ? sse / energy : 0)
    }

    // MARK: - Data handling

    private static func checkShape(_ vectors: [Float], count: Int, dimension m: Int) throws {
        guard count >= 1, m >= 1, !count.multipliedReportingOverflow(by: m).overflow, vectors.count == count * m else {
            throw NeuralDictError.badVectorShape(elements: vectors.count, count: count, dimension: m)
        }
    }

    private static func checkFinite(_ vectors: [Float], dimension m: Int) throws {
        if let p = vectors.firstIndex(where: { !$0.isFinite }) {
            throw NeuralDictError.nonFiniteInput(vector: p / m, element: p % m)
        }
    }

    /// Vectors held out of `count` at `fraction`: round(count * fraction), at least 1.
    static func heldOutCount(count: Int, fraction: Double) -> Int {
        min(count, max(1, Int((Double(count) * fraction).rounded())))
    }

    /// Which rows are held out and which are trained on: a seeded random permutation of
    /// 0 ..< count cut in two, so the parts are disjoint, cover every row and are each in
    /// random order.
    static func heldOutSplit(count: Int, heldOut: Int,
                             using rng: inout Xoshiro256StarStar) -> (train: ArraySlice<Int>, test: ArraySlice<Int>) {
        var order = Array(0..<count)
        shuffle(&order, using: &rng)
        return (order[heldOut...], order[..<heldOut])
    }

    /// Fisher-Yates with the seeded generator: the same permutation on every platform.
    static func shuffle(_ a: inout [Int], using rng: inout Xoshiro256StarStar) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            a.swapAt(i, Int(rng.next(upperBound: UInt64(i + 1))))
        }
    }

    /// The given rows of a (count, m) array, in the given order: (rows.count, m).
    private static func gather(_ vectors: [Float], rows: ArraySlice<Int>, dimension m: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows.count * m)
        for (r, row) in rows.enumerated() {
            for i in 0..<m { out[r * m + i] = vectors[row * m + i] }
        }
        return out
    }

    /// One step's training vectors and what coding them produced.
    struct Minibatch {
        /// B, the vectors per step.
        let rows: Int
        let dimension: Int
        let sparsity: Int
        /// (B, m)
        var vectors: [Float]
        /// (B, s) MP codes of `vectors` under the atoms of the step.
        var indices: [UInt16]
        /// (B, s)
        var coefficients: [Float]
        /// (B) ||x - x^||^2 of each row.
        var rowErrors: [Float]

        init(rows: Int, dimension m: Int, sparsity s: Int) {
            self.rows = rows
            dimension = m
            sparsity = s
            vectors = [Float](repeating: 0, count: rows * m)
            indices = [UInt16](repeating: 0, count: rows * s)
            coefficients = [Float](repeating: 0, count: rows * s)
            rowErrors = [Float](repeating: 0, count: rows)
        }

        /// Runs `body` with pointers to vectors, indices, coefficients and rowErrors.
        mutating func withPointers(_ body: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<UInt16>,
                                            UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
            vectors.withUnsafeMutableBufferPointer { x in
                indices.withUnsafeMutableBufferPointer { i in
                    coefficients.withUnsafeMutableBufferPointer { c in
                        rowErrors.withUnsafeMutableBufferPointer { r in
                            guard let xp = x.baseAddress, let ip = i.baseAddress, let cp = c.baseAddress,
                                  let rp = r.baseAddress else { return }
                            body(xp, ip, cp, rp)
                        }
                    }
                }
            }
        }
    }

    /// Draws minibatches without replacement within an epoch (every training vector once
    /// before any repeats), reshuffling between epochs.
    private struct MinibatchSampler {
        private var order: [Int]
        private var position = 0

        init(count: Int, using rng: inout Xoshiro256StarStar) {
            order = Array(0..<count)
            NeuralDictTrainer.shuffle(&order, using: &rng)
        }

        /// Copies the next B vectors of `source` ((count, m)) into `batch.vectors`.
        mutating func fill(_ batch: inout Minibatch, from source: [Float], using rng: inout Xoshiro256StarStar) {
            let m = batch.dimension
            for r in 0..<batch.rows {
                if position == order.count {
                    NeuralDictTrainer.shuffle(&order, using: &rng)
                    position = 0
                }
                let row = order[position]
                position += 1
                for i in 0..<m { batch.vectors[r * m + i] = source[row * m + i] }
            }
        }
    }
}
