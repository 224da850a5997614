import Testing
@testable import SparseCoding

// MARK: - Synthetic training data

/// Vectors that are s-sparse combinations of a hidden random dictionary (coefficient
/// magnitudes 0.5 ... 2, random signs) plus Gaussian noise of standard deviation 0.01:
/// data a dictionary can fit well, and a known good dictionary to compare with.
private struct SyntheticData {
    static let atomCount = 48, dimension = 16, sparsity = 3
    let hidden: SparseDictionary
    /// (count, m) training vectors.
    let vectors: [Float]
    /// (count, m) more vectors from the same source, never given to the trainer.
    let fresh: [Float]
    let count: Int

    init(count: Int = 6000, seed: UInt64 = 5) throws {
        let hidden = try SparseDictionary(randomAtomCount: Self.atomCount, dimension: Self.dimension, seed: seed)
        var sig = Signals(seed: seed + 1)
        vectors = Self.draw(count, from: hidden, &sig)
        fresh = Self.draw(2000, from: hidden, &sig)
        self.hidden = hidden
        self.count = count
    }

    private static func draw(_ count: Int, from hidden: SparseDictionary, _ sig: inout Signals) -> [Float] {
        var (x, _) = sig.sparseSignals(count: count, sparsity: sparsity, dictionary: hidden, magnitudes: 0.5...2)
        for i in x.indices { x[i] += 0.01 * sig.rng.nextGaussian() }
        return x
    }

    /// Test-sized options: 300 steps of 512 vectors.
    static func options(steps: Int = 300, seed: UInt64 = 1) -> NeuralDictOptions {
        NeuralDictOptions(atomCount: atomCount, sparsity: sparsity, steps: steps, batchSize: 512, seed: seed)
    }

    func train(_ options: NeuralDictOptions = SyntheticData.options(),
               progress: ((NeuralDictProgress) -> Void)? = nil) throws -> (dictionary: SparseDictionary, report: NeuralDictReport) {
        try NeuralDictTrainer.train(vectors: vectors, count: count, dimension: Self.dimension, options: options,
                                    progress: progress)
    }

    /// MSE per element of the fresh vectors under `dictionary`.
    func freshMSE(_ dictionary: SparseDictionary) throws -> Double {
        try NeuralDictTrainer.codingError(vectors: fresh, count: fresh.count / Self.dimension, dictionary: dictionary,
                                          sparsity: Self.sparsity).mse
    }
}

// MARK: - Training improves the dictionary

/// Measured: held-out MSE 4.12e-2 after k-means, 1.95e-2 after 300 steps (relative error
/// 0.125 -> 0.059); on the fresh vectors 3.99e-2 (k-means), 2.05e-2 (trained), 9.97e-2 (a
/// random dictionary) and 1.61e-2 (the hidden dictionary itself).
@Test func trainingLowersHeldOutErrorBelowKMeansAndRandom() throws {
    let data = try SyntheticData()
    let (trained, report) = try data.train()
    #expect(report.testMSE < 0.7 * report.initialTestMSE)
    #expect(report.testRelativeError < 0.7 * report.initialTestRelativeError)
    #expect(report.trainMSE < 0.7 * report.initialTrainMSE)

    // The same on vectors the trainer never saw, against the k-means dictionary alone.
    let (kmeansOnly, _) = try data.train(SyntheticData.options(steps: 0))
    let random = try SparseDictionary(randomAtomCount: SyntheticData.atomCount, dimension: SyntheticData.dimension, seed: 99)
    let trainedMSE = try data.freshMSE(trained)
    #expect(trainedMSE < 0.7 * (try data.freshMSE(kmeansOnly)))
    #expect(trainedMSE < 0.3 * (try data.freshMSE(random)))
    // Nothing can beat the source by much: the report measures what it claims.
    #expect(trainedMSE > 0.8 * (try data.freshMSE(data.hidden)))
    #expect(abs(report.testMSE - trainedMSE) < 0.2 * trainedMSE)
}

/// Adam's steps do not depend on the gradient's scale, and below its clamp neither does
/// beta's share, so vectors 100 times smaller train to the same relative error. (With the
/// usual Adam epsilon of 1e-8 the two came out 1% apart.)
@Test func trainingIsScaleInvariantBelowTheBetaClamp() throws {
    let data = try SyntheticData(count: 3000)
    let small = data.vectors.map { $0 * 0.01 }
    let options = SyntheticData.options(steps: 150)
    let (_, unit) = try data.train(options)
    let (_, scaled) = try NeuralDictTrainer.train(vectors: small, count: data.count, dimension: SyntheticData.dimension,
                                                  options: options)
    #expect(abs(scaled.testRelativeError - unit.testRelativeError) < 1e-3 * unit.testRelativeError)
    #expect(abs(scaled.testMSE / (0.01 * 0.01) - unit.testMSE) < 1e-3 * unit.testMSE)
}

@Test func kmeansAloneBeatsARandomDictionary() throws {
    let data = try SyntheticData()
    let (kmeansOnly, report) = try data.train(SyntheticData.options(steps: 0))
    let random = try SparseDictionary(randomAtomCount: SyntheticData.atomCount, dimension: SyntheticData.dimension, seed: 99)
    #expect(try data.freshMSE(kmeansOnly) < 0.6 * (try data.freshMSE(random)))
    #expect(report.selectedStep == 0)
    #expect(report.testMSE == report.initialTestMSE)
}

@Test func trainedAtomsHaveUnitNorm() throws {
    let (d, _) = try SyntheticData().train(SyntheticData.options(steps: 60))
    for n in 0..<d.atomCount {
        let norm = d.atom(n).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(abs(norm - 1) < 1e-5, "atom \(n)")
    }
}

@Test func sameSeedGivesTheSameDictionary() throws {
    let data = try SyntheticData(count: 3000)
    let (a, ra) = try data.train(SyntheticData.options(steps: 60, seed: 7))
    let (b, rb) = try data.train(SyntheticData.options(steps: 60, seed: 7))
    let (c, _) = try data.train(SyntheticData.options(steps: 60, seed: 8))
    #expect(a.atoms == b.atoms)
    #expect(ra.testMSE == rb.testMSE && ra.trainMSE == rb.trainMSE && ra.replacedAtoms == rb.replacedAtoms)
    #expect(a.atoms != c.atoms)
}

// MARK: - The held-out split

@Test func heldOutSplitIsDisjointAndCoversEveryVector() throws {
    var rng = Xoshiro256StarStar(seed: 3)
    let count = 1000, heldOut = NeuralDictTrainer.heldOutCount(count: count, fraction: 0.1)
    #expect(heldOut == 100)
    let split = NeuralDictTrainer.heldOutSplit(count: count, heldOut: heldOut, using: &rng)
    #expect(split.test.count == heldOut && split.train.count == count - heldOut)
    #expect(Set(split.test).isDisjoint(with: Set(split.train)))
    #expect(Set(split.test).union(split.train) == Set(0..<count))
    #expect(NeuralDictTrainer.heldOutCount(count: 5, fraction: 0.01) == 1)
}

/// As many atoms as training vectors: k-means makes every training vector an atom, so the
/// training vectors code exactly at s = 1. The held-out ones (random directions) cannot,
/// which they would if any had been trained on.
@Test func heldOutVectorsAreNeverTrainedOn() throws {
    var sig = Signals(seed: 12)
    let count = 220, m = 16
    let x = sig.gaussian(count: count, dimension: m)
    let options = NeuralDictOptions(atomCount: 198, sparsity: 1, steps: 0, kmeansIterations: 3, heldOutFraction: 0.1)
    let (_, report) = try NeuralDictTrainer.train(vectors: x, count: count, dimension: m, options: options)
    #expect(report.trainCount == 198 && report.testCount == 22)
    #expect(report.trainRelativeError < 1e-6)
    #expect(report.testRelativeError > 0.1)
}

// MARK: - Progress and selection

@Test func progressReportsKMeansThenEveryStep() throws {
    var events: [NeuralDictProgress] = []
    var options = SyntheticData.options(steps: 60)
    options.evaluateEvery = 25
    options.keepBestHeldOut = false
    let (_, report) = try SyntheticData(count: 3000).train(options) { events.append($0) }

    let kmeans = events.filter { $0.phase != .training }
    #expect(kmeans.map(\.phase) == (1...10).map { NeuralDictProgress.Phase.kmeans(iteration: $0, of: 10) })
    // Both Lloyd steps lower the one-atom error (see KMeans).
    for (a, b) in zip(kmeans, kmeans.dropFirst()) { #expect(b.mse <= a.mse * (1 + 1e-6)) }

    let steps = events.filter { $0.phase == .training }
    #expect(steps.map(\.step) == Array(1...60))
    #expect(steps.allSatisfy { $0.totalSteps == 60 && $0.beta >= 0 && $0.beta <= 1 && $0.mse > 0 && $0.diversity > 0 })
    #expect(steps.filter { $0.heldOutMSE != nil }.map(\.step) == [25, 50, 60])
    #expect(steps.last?.heldOutMSE == report.testMSE)
    #expect(report.selectedStep == 60)
}

/// A learning rate far too large (each entry of a unit atom moves by 2 per step, so the atoms
/// end up near sign patterns) makes the atoms worse than k-means left them; keeping the best
/// held-out dictionary falls back on the k-means one.
@Test func keepBestHeldOutSurvivesABadLearningRate() throws {
    let data = try SyntheticData(count: 3000)
    var options = SyntheticData.options(steps: 50)
    options.learningRate = 2
    options.keepBestHeldOut = false
    let (_, last) = try data.train(options)
    #expect(last.testMSE > 1.1 * last.initialTestMSE)
    options.keepBestHeldOut = true
    let (_, best) = try data.train(options)
    #expect(best.testMSE == best.initialTestMSE)
    #expect(best.selectedStep == 0)
}

// MARK: - The gradient of one step

/// With the code held fixed, the step's gradient is the exact derivative of
/// MSE + beta * diversity: compare with central differences computed in Double.
@Test func stepGradientMatchesFiniteDifferencesWithTheCodeHeldFixed() throws {
    let n = 12, m = 8, s = 3, b = 40
    let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 3)
    var sig = Signals(seed: 4)
    var batch = NeuralDictTrainer.Minibatch(rows: b, dimension: m, sparsity: s)
    batch.vectors = sig.gaussian(count: b, dimension: m)
    let encoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, threads: 1))
    var mseGradient = [Float](repeating: 0, count: n * m)
    let plain = try NeuralDictTrainer.lossAndGradient(&batch, encoder: encoder, diversityScale: 0, gradient: &mseGradient)
    var fullGradient = [Float](repeating: 0, count: n * m)
    // A huge scale clamps beta at 1.
    let full = try NeuralDictTrainer.lossAndGradient(&batch, encoder: encoder, diversityScale: 1e9, gradient: &fullGradient)
    #expect(plain.beta == 0 && full.beta == 1)

    func mse(_ a: [Double]) -> Double {
        var sum = 0.0
        for row in 0..<b {
            for i in 0..<m {
                var e = Double(batch.vectors[row * m + i])
                for k in 0..<s { e -= Double(batch.coefficients[row * s + k]) * a[Int(batch.indices[row * s + k]) * m + i] }
                sum += e * e
            }
        }
        return sum / Double(b * m)
    }
    func diversity(_ a: [Double]) -> Double {
        var sum = 0.0
        for p in 0..<n {
            for q in 0..<n {
                let dot = (0..<m).reduce(0.0) { $0 + a[p * m + $1] * a[q * m + $1] }
                sum += ((p == q ? 1 : 0) - dot) * ((p == q ? 1 : 0) - dot)
            }
        }
        return sum / Double(n * n)
    }
    let atoms = d.atoms.map(Double.init)
    #expect(abs(plain.mse - mse(atoms)) < 1e-5 * plain.mse)
    #expect(abs(plain.diversity - diversity(atoms)) < 1e-4 * plain.diversity)

    let h = 1e-4
    let largest = mseGradient.map { abs(Double($0)) }.max() ?? 0
    let largestDiv = zip(fullGradient, mseGradient).map { abs(Double($0 - $1)) }.max() ?? 0
    #expect(largest > 0 && largestDiv > 0)
    for p in 0..<(n * m) {
        var up = atoms, down = atoms
        up[p] += h
        down[p] -= h
        let dMSE = (mse(up) - mse(down)) / (2 * h)
        let dDiv = (diversity(up) - diversity(down)) / (2 * h)
        #expect(abs(Double(mseGradient[p]) - dMSE) < 1e-3 * largest, "MSE, parameter \(p)")
        #expect(abs(Double(fullGradient[p] - mseGradient[p]) - dDiv) < 1e-3 * largestDiv, "diversity, parameter \(p)")
    }
}

/// Bias correction makes Adam's first steps exactly lr * sign(g), whatever the scale of g.
@Test func adamFirstStepsMoveByTheLearningRate() {
    var adam = AdamOptimizer(parameterCount: 4, learningRate: 0.01)
    var p: [Float] = [1, 2, 3, 4]
    let g: [Float] = [0.5, -1e-6, 3e4, 0]
    for step in 1...2 {
        p.withUnsafeMutableBufferPointer { pp in
            g.withUnsafeBufferPointer { gp in adam.update(pp.baseAddress!, gradient: gp.baseAddress!) }
        }
        let expected: [Float] = [1 - 0.01 * Float(step), 2 + 0.01 * Float(step), 3 - 0.01 * Float(step), 4]
        for i in 0..<4 { #expect(abs(p[i] - expected[i]) < 1e-5, "step \(step), parameter \(i)") }
    }
}

// MARK: - Atom replacement

@Test func duplicateAndUnusedAtomsAreChosenForReplacement() {
    let n = 5
    var gram = [Float](repeating: 0.1, count: n * n)  // (N, N)
    for a in 0..<n { gram[a * n + a] = 1 }
    gram[0 * n + 2] = -0.97; gram[2 * n + 0] = -0.97  // twins (sign does not matter), 0 used less
    gram[3 * n + 4] = 0.9; gram[4 * n + 3] = 0.9  // close, but below the threshold
    let usage = [5, 0, 7, 3, 9]  // atom 1 unused
    #expect(NeuralDictTrainer.atomsToReplace(gram: gram, atomCount: n, usage: usage, coherence: 0.95) == [0, 1])
    #expect(NeuralDictTrainer.atomsToReplace(gram: gram, atomCount: n, usage: usage, coherence: 0.98) == [1])
}

@Test func replacedAtomsTakeTheWorstResiduals() throws {
    let n = 6, m = 4, s = 1
    let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 2)
    var sig = Signals(seed: 3)
    var batch = NeuralDictTrainer.Minibatch(rows: 10, dimension: m, sparsity: s)
    batch.vectors = sig.gaussian(count: 10, dimension: m)
    var gradient = [Float](repeating: 0, count: n * m)
    let encoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, threads: 1))
    _ = try NeuralDictTrainer.lossAndGradient(&batch, encoder: encoder, diversityScale: 0.1, gradient: &gradient)
    var atoms = d.atoms
    var adam = AdamOptimizer(parameterCount: n * m, learningRate: 0.01)
    let replaced = NeuralDictTrainer.replaceAtoms([4, 1], in: &atoms, codedWith: d, batch: batch, adam: &adam)
    #expect(replaced == 2)

    let worst = (0..<10).sorted { batch.rowErrors[$0] > batch.rowErrors[$1] }
    for (atom, row) in zip([4, 1], worst) {
        let c = batch.coefficients[row], used = Int(batch.indices[row])
        let residual = (0..<m).map { batch.vectors[row * m + $0] - c * d.atoms[used * m + $0] }
        #expect(Array(atoms[(atom * m)..<((atom + 1) * m)]) == residual)
    }
    for a in [0, 2, 3, 5] { #expect(Array(atoms[(a * m)..<((a + 1) * m)]) == Array(d.atom(a))) }
}

// MARK: - Measuring a dictionary

@Test func codingErrorAgreesWithEncodeAndDecode() throws {
    let d = try SparseDictionary(randomAtomCount: 64, dimension: 16, seed: 5)
    var sig = Signals(seed: 6)
    let count = 300, s = 4
    let x = sig.gaussian(count: count, dimension: 16)
    let decoded = try d.decode(try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count))
    let error = try NeuralDictTrainer.codingError(vectors: x, count: count, dictionary: d, sparsity: s)
    let expected = meanSquaredError(x, decoded)
    #expect(abs(error.mse - expected) < 1e-6 * expected)
    let energy = x.reduce(0.0) { $0 + Double($1) * Double($1) }
    #expect(abs(error.relative - expected * Double(x.count) / energy) < 1e-6 * error.relative)
    #expect(throws: NeuralDictError.dimensionMismatch(vectors: 8, dictionary: 16)) {
        try NeuralDictTrainer.codingError(vectors: Array(x.prefix(8 * 10)), count: 10, dictionary: d, sparsity: s)
    }
}

// MARK: - Bad input

/// The name of the option a `.badOption` error blames, or nil for any other outcome.
private func blamedOption(_ options: NeuralDictOptions, data: SyntheticData) -> String? {
    do {
        _ = try data.train(options)
        return nil
    } catch NeuralDictError.badOption(let name, _, _) {
        return name
    } catch {
        return nil
    }
}

@Test func badOptionsAreRejectedByName() throws {
    let data = try SyntheticData(count: 600)
    let good = SyntheticData.options(steps: 1)
    let cases: [(String, (inout NeuralDictOptions) -> Void)] = [
        ("steps", { $0.steps = -1 }),
        ("batchSize", { $0.batchSize = 0 }),
        ("learningRate", { $0.learningRate = 0 }),
        ("learningRate", { $0.learningRate = .nan }),
        ("kmeansIterations", { $0.kmeansIterations = -1 }),
        ("kmeansMaxVectors", { $0.kmeansMaxVectors = 0 }),
        ("heldOutFraction", { $0.heldOutFraction = 0 }),
        ("heldOutFraction", { $0.heldOutFraction = 1 }),
        ("diversityScale", { $0.diversityScale = -0.1 }),
        ("evaluateEvery", { $0.evaluateEvery = 0 }),
        ("duplicateCoherence", { $0.duplicateCoherence = 0 }),
        ("threads", { $0.threads = 0 }),
    ]
    for (name, change) in cases {
        var options = good
        change(&options)
        #expect(blamedOption(options, data: data) == name)
    }
    #expect(blamedOption(good, data: data) == nil)
}

@Test func badAtomCountsSparsitiesAndDataAreRejected() throws {
    let data = try SyntheticData(count: 600)
    let m = SyntheticData.dimension
    func train(_ x: [Float], _ count: Int, _ options: NeuralDictOptions) throws {
        _ = try NeuralDictTrainer.train(vectors: x, count: count, dimension: m, options: options)
    }
    var options = SyntheticData.options(steps: 1)
    options.atomCount = 0
    #expect(throws: NeuralDictError.badAtomCount(atomCount: 0, limit: 65536)) { try train(data.vectors, 600, options) }
    options.atomCount = 70_000
    #expect(throws: NeuralDictError.badAtomCount(atomCount: 70_000, limit: 65536)) { try train(data.vectors, 600, options) }
    options = SyntheticData.options(steps: 1)
    options.sparsity = 0
    #expect(throws: NeuralDictError.badSparsity(sparsity: 0, limit: PackedCodes.maxSparsity)) { try train(data.vectors, 600, options) }

    // 50 vectors, 5 held out: 45 left for 48 atoms.
    options = SyntheticData.options(steps: 1)
    #expect(throws: NeuralDictError.tooFewVectors(count: 50, heldOut: 5, atomCount: 48)) {
        try train(Array(data.vectors.prefix(50 * m)), 50, options)
    }
    #expect(throws: NeuralDictError.badVectorShape(elements: 600 * m - 1, count: 600, dimension: m)) {
        try train(Array(data.vectors.dropLast()), 600, options)
    }
    var poisoned = data.vectors
    poisoned[7 * m + 3] = .infinity
    #expect(throws: NeuralDictError.nonFiniteInput(vector: 7, element: 3)) { try train(poisoned, 600, options) }
    // Fewer non-zero vectors than atoms: k-means cannot seed.
    var sparse = [Float](repeating: 0, count: 600 * m)
    for i in 0..<(10 * m) { sparse[i] = data.vectors[i] }
    do {
        try train(sparse, 600, options)
        Issue.record("trained with 10 non-zero vectors for 48 atoms")
    } catch NeuralDictError.tooFewNonZeroVectors(let found, let sampled, let atoms) {
        #expect(found <= 10 && sampled == 540 && atoms == 48)
    }
}
