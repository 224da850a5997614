/// Settings of NeuralDict dictionary training (see ``NeuralDictTrainer``).
///
/// Defaults are sized for the real use: 100k-400k KV vectors of m = 32 or 64, N = 1024 ... 4096
/// atoms, trained in minutes on two cores.
public struct NeuralDictOptions: Sendable, Equatable {
    /// N, the atoms to train (1 ... ``SparseDictionary/maxAtomCount``).
    public var atomCount: Int
    /// s, the Matching Pursuit steps per vector during training and evaluation. Train at the
    /// sparsity the cache will encode with: the atoms adapt to it.
    public var sparsity: Int
    /// Optimisation steps after the k-means initialisation (0 returns the k-means dictionary).
    /// 300 (3 epochs of 200k vectors at B = 2048) takes 4 s at N = 1024, m = 64 and about a
    /// minute at N = 4096 on two cores. On synthetic data at N = 1024 the held-out MSE was
    /// 1.09e-2 after 300 steps and 0.96e-2 after 900, flat from about 600: raise it when a
    /// group's dictionary is worth the time.
    public var steps: Int
    /// Training vectors per step (capped at the training set's size). 2048 vectors cover
    /// N = 1024 atoms 16 times over at s = 8, enough for a usable gradient on most atoms.
    public var batchSize: Int
    /// Adam's step size: roughly the largest change of one atom entry per step, whatever the
    /// scale of the vectors (unit atoms have entries of typical size 1/sqrt(m), 0.125 at
    /// m = 64). See ``defaultLearningRate`` for how it was chosen.
    public var learningRate: Float
    /// Lloyd iterations of the spherical k-means that initialises the atoms (0 keeps the
    /// random training vectors it is seeded with).
    public var kmeansIterations: Int
    /// Largest number of training vectors k-means runs on (a random subset when there are
    /// more). Each iteration costs one (vectors x m x N) sgemm and a one-atom MP pass:
    /// 131072 vectors at N = 4096, m = 64 measured 1.4-1.7 s per iteration on two cores,
    /// 0.4 s at N = 1024. Values below N count as N.
    public var kmeansMaxVectors: Int
    /// Fraction of the vectors held out, never used for training, to measure the error on
    /// (0 < f < 1; at least one vector is held out).
    public var heldOutFraction: Double
    /// The 0.1 in the diversity weight beta = clamp(diversityScale * L_mse / L_div, 0, 1):
    /// the diversity term's share of the loss while beta is below its clamp (0 turns it off).
    public var diversityScale: Float
    /// Held-out evaluation period in steps (the last step is always evaluated).
    public var evaluateEvery: Int
    /// Return the dictionary with the lowest held-out MSE among those evaluated (the k-means
    /// one included) rather than the last one. The held-out vectors then pick among a few
    /// candidates, a selection too coarse to bias their MSE measurably at these sizes.
    public var keepBestHeldOut: Bool
    /// Replace atoms that nearly repeat another or go unused (K-SVD's dictionary cleaning,
    /// not in the CSR paper; see `NeuralDictTrainer+AtomReplacement.swift`). Off gives the
    /// paper's method exactly. On synthetic data it lowered the held-out MSE after 300 steps
    /// by 32% at N = 256, m = 64, s = 8 and by 22% at N = 1024, to within 12-19% of the
    /// hidden dictionary's own.
    public var replaceAtoms: Bool
    /// |cos| between two atoms above which the less used one is replaced (with
    /// ``replaceAtoms``). Twins left by k-means drift apart only to 0.96-0.98 in 300 steps:
    /// 0.98 was 1% worse than 0.95 at N = 1024 and replaced nothing at N = 48, m = 16.
    public var duplicateCoherence: Float
    /// Seeds the held-out split, the k-means sample and the minibatches: the same seed, data
    /// and options give the same dictionary.
    public var seed: UInt64
    /// Threads of the Matching Pursuit encoder (see ``MatchingPursuitEncoder/Options/threads``).
    public var threads: Int

    /// Adam's default step size. Measured on synthetic data (s-sparse combinations of a hidden
    /// random dictionary plus noise, 300 steps, held-out MSE): at N = 1024, m = 64, s = 8,
    /// 3e-3 beat 1e-3 by 34% and 1e-2 by 4%; at N = 256, m = 64, s = 8 it tied 1e-2 (1% apart)
    /// and beat 3e-2 by 5%; only at N = 48, m = 16 did 1e-2 do clearly better (18%). Larger
    /// rates fall faster at first, then stall higher as the atoms jitter by lr every step.
    public static let defaultLearningRate: Float = 3e-3

    /// - Parameters:
    ///   - atomCount: N, the atoms to train.
    ///   - sparsity: s, the pairs per vector the dictionary is trained for.
    public init(atomCount: Int, sparsity: Int, steps: Int = 300, batchSize: Int = 2048,
                learningRate: Float = NeuralDictOptions.defaultLearningRate, kmeansIterations: Int = 10,
                kmeansMaxVectors: Int = 131_072, heldOutFraction: Double = 0.1, diversityScale: Float = 0.1,
                evaluateEvery: Int = 25, keepBestHeldOut: Bool = true, replaceAtoms: Bool = true,
                duplicateCoherence: Float = 0.95, seed: UInt64 = 0,
                threads: Int = MatchingPursuitEncoder.defaultThreads) {
        self.atomCount = atomCount
        self.sparsity = sparsity
        self.steps = steps
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.kmeansIterations = kmeansIterations
        self.kmeansMaxVectors = kmeansMaxVectors
        self.heldOutFraction = heldOutFraction
        self.diversityScale = diversityScale
        self.evaluateEvery = evaluateEvery
        self.keepBestHeldOut = keepBestHeldOut
        self.replaceAtoms = replaceAtoms
        self.duplicateCoherence = duplicateCoherence
        self.seed = seed
        self.threads = threads
    }

    /// Checks every field against its documented range.
    ///
    /// - Throws: `NeuralDictError.badAtomCount`, `.badSparsity` or `.badOption` naming the field.
    func validate() throws {
        guard atomCount >= 1, atomCount <= SparseDictionary.maxAtomCount else {
            throw NeuralDictError.badAtomCount(atomCount: atomCount, limit: SparseDictionary.maxAtomCount)
        }
        guard sparsity >= 1, sparsity <= PackedCodes.maxSparsity else {
            throw NeuralDictError.badSparsity(sparsity: sparsity, limit: PackedCodes.maxSparsity)
        }
        func check(_ ok: Bool, _ name: String, _ value: String, _ expected: String) throws {
            guard ok else { throw NeuralDictError.badOption(name: name, value: value, expected: expected) }
        }
        try check(steps >= 0, "steps", "\(steps)", "at least 0")
        try check(batchSize >= 1, "batchSize", "\(batchSize)", "at least 1")
        try check(learningRate.isFinite && learningRate > 0, "learningRate", "\(learningRate)",
                  "a finite number above 0 (default \(Self.defaultLearningRate))")
        try check(kmeansIterations >= 0, "kmeansIterations", "\(kmeansIterations)", "at least 0")
        try check(kmeansMaxVectors >= 1, "kmeansMaxVectors", "\(kmeansMaxVectors)", "at least 1")
        try check(heldOutFraction > 0 && heldOutFraction < 1, "heldOutFraction", "\(heldOutFraction)",
                  "above 0 and below 1 (default 0.1)")
        try check(diversityScale.isFinite && diversityScale >= 0, "diversityScale", "\(diversityScale)",
                  "a finite number of at least 0 (default 0.1)")
        try check(evaluateEvery >= 1, "evaluateEvery", "\(evaluateEvery)", "at least 1")
        try check(duplicateCoherence > 0 && duplicateCoherence <= 1, "duplicateCoherence", "\(duplicateCoherence)",
                  "above 0 and at most 1 (default 0.95)")
        try check(threads >= 1, "threads", "\(threads)", "at least 1")
    }
}
