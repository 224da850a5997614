// MARK: - Replacing duplicate and unused atoms (not in the CSR paper)

/// k-means leaves some directions of the data with two nearly equal centroids and others
/// with none, and gradient steps do not undo it: the two twins share the vectors between
/// them (MP picks whichever correlates a little better), so neither has a reason to move
/// away, and the diversity term, weighted to a tenth of the MSE and spread over N^2 pairs,
/// pushes them apart too slowly. On synthetic data (hidden random dictionary, N = 256, m = 64,
/// s = 8) 11 pairs of trained atoms ended above |cos| 0.95, 23 of the 256 hidden atoms had
/// no trained atom within |cos| 0.99, and the held-out MSE stalled at 1.6x that of the hidden dictionary itself.
///
/// So, as K-SVD does (Aharon, Elad & Bruckstein 2006, "dictionary cleaning"), every
/// `replacementPeriod` steps an atom that nearly repeats another (the less used of a pair
/// above ``NeuralDictOptions/duplicateCoherence``) or that no minibatch vector used during
/// the period is replaced by the residual of the worst-coded vector of the step's batch:
/// the direction the dictionary misses most. Its Adam moments restart from zero.
/// Replacement stops after three quarters of the steps so that the new atoms get trained.
extension NeuralDictTrainer {
    /// Steps between replacements, and the window over which usage is counted.
    static let replacementPeriod = 25

    /// Whether atoms are replaced after step `step` of `steps`.
    static func replacesAtoms(after step: Int, of steps: Int) -> Bool {
        step % replacementPeriod == 0 && step <= steps * 3 / 4
    }

    /// The atoms to replace: unused ones, then the less used atom of every pair with
    /// |<d_a, d_b>| above `coherence` (each atom counted once), in increasing order.
    ///
    /// - Parameters:
    ///   - gram: (N, N) Gram matrix of the atoms.
    ///   - usage: (N) pairs that chose each atom during the period.
    static func atomsToReplace(gram: [Float], atomCount n: Int, usage: [Int], coherence: Float) -> [Int] {
        var replace = [Bool](repeating: false, count: n)  // (N)
        for a in 0..<n where usage[a] == 0 { replace[a] = true }
        for a in 0..<n where !replace[a] {
            for b in (a + 1)..<n where !replace[b] && abs(gram[a * n + b]) > coherence {
                let loser = usage[a] < usage[b] ? a : b
                replace[loser] = true
                if loser == a { break }
            }
        }
        return (0..<n).filter { replace[$0] }
    }

    /// Overwrites `replace` atoms of `atoms` ((N, m), unnormalised) with the residuals of the
    /// batch's worst-coded rows, one distinct row each, and resets their Adam moments.
    ///
    /// - Parameters:
    ///   - dictionary: the atoms the batch was coded with.
    ///   - batch: vectors, codes and row errors of the step.
    /// - Returns: the atoms replaced (fewer than asked when the batch runs out of rows with
    ///   a non-zero residual).
    static func replaceAtoms(_ replace: [Int], in atoms: inout [Float], codedWith dictionary: SparseDictionary,
                             batch: Minibatch, adam: inout AdamOptimizer) -> Int {
        let m = dictionary.dimension, s = batch.sparsity
        let errors = batch.rowErrors
        // Stable order (index breaks ties), so the same input replaces the same way.
        let worst = (0..<batch.rows).sorted { errors[$0] > errors[$1] || (errors[$0] == errors[$1] && $0 < $1) }
        var replaced = 0
        for (a, row) in zip(replace, worst) {
            // Below this the residual could not be normalised; the rest are smaller still.
            guard Double(errors[row]) > KMeans.minEnergy else { break }
            var e = Array(batch.vectors[(row * m)..<((row + 1) * m)])  // (m)
            for k in 0..<s {
                let c = batch.coefficients[row * s + k], atom = Int(batch.indices[row * s + k]) * m
                for i in 0..<m { e[i] -= c * dictionary.atoms[atom + i] }
            }
            for i in 0..<m { atoms[a * m + i] = e[i] }
            adam.reset((a * m)..<((a + 1) * m))
            replaced += 1
        }
        return replaced
    }
}
