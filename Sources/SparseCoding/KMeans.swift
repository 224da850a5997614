/// Spherical k-means for NeuralDict's initial atoms: N unit directions fitted to the training
/// vectors the way a one-atom Matching Pursuit code uses them.
///
/// The objective is the error of coding each vector with its best single atom,
/// sum_x min_n ||x - <x, d_n> d_n||^2 = sum_x ||x||^2 - max_n <x, d_n>^2, the training loss
/// at s = 1. Lloyd's two steps both lower it:
/// - assignment: each vector goes to the atom of largest |<x, d_n>|. That is one MP step,
///   so the encoder does it (one sgemm per chunk, threads). It equals the largest |cosine|,
///   so vectors are clustered by direction, sign ignored, as on the unit sphere.
/// - update: d_n <- normalise(sum_{x in cluster n} <x, d_n> x), one power-iteration step on
///   the cluster's scatter matrix sum x x^T, which cannot lower sum <x, d_n>^2. Unlike the
///   mean of the normalised vectors, this weighs vectors by their energy, as the MSE does:
///   KV vectors range over norms 1-20, and the large ones dominate the error.
/// Seeds are random training vectors (the caller passes them in random order, so the first
/// non-zero ones are a uniform sample). k-means++ would seed better but is sequential in N,
/// N passes over the data; Lloyd iterations repair random seeds at a fraction of that cost.
/// An empty cluster is reseeded with the worst-fitted vector left (largest one-atom
/// residual), which then fits exactly.
enum KMeans {
    /// Runs `iterations` Lloyd iterations and returns the centroids as unit atoms.
    ///
    /// - Parameters:
    ///   - vectors: (count, m) row-major, finite, in random order.
    ///   - progress: called after each iteration's assignment with (iteration 1-based,
    ///     one-atom MSE per element, (1/N^2) ||I - D D^T||_F^2) of the centroids assigned to.
    /// - Throws: `NeuralDictError.tooFewNonZeroVectors` when fewer than N vectors are non-zero.
    static func fit(vectors: UnsafePointer<Float>, count: Int, dimension m: Int, atomCount n: Int,
                    iterations: Int, threads: Int,
                    progress: (_ iteration: Int, _ mse: Double, _ diversity: Double) -> Void) throws -> SparseDictionary {
        var energy = [Double](repeating: 0, count: count)  // (count) ||x||^2
        for b in 0..<count {
            var e = 0.0
            for i in 0..<m { e += Double(vectors[b * m + i]) * Double(vectors[b * m + i]) }
            energy[b] = e
        }

        // MARK: Seeds
        var centroids = [Float](repeating: 0, count: n * m)  // (N, m)
        var seeded = 0
        for b in 0..<count where seeded < n && energy[b] > minEnergy {
            for i in 0..<m { centroids[seeded * m + i] = vectors[b * m + i] }
            seeded += 1
        }
        guard seeded == n else {
            throw NeuralDictError.tooFewNonZeroVectors(found: seeded, sampled: count, atomCount: n)
        }

        // MARK: Lloyd iterations
        var indices = [UInt16](repeating: 0, count: count)  // (count, 1)
        var coefficients = [Float](repeating: 0, count: count)  // (count, 1)
        var members = [Int](repeating: 0, count: n)  // (N)
        for iteration in 1..<(iterations + 1) {
            let dictionary = try SparseDictionary(atoms: centroids, atomCount: n, dimension: m)
            let encoder = try MatchingPursuitEncoder(dictionary: dictionary, options: .init(sparsity: 1, threads: threads))
            indices.withUnsafeMutableBufferPointer { ip in
                coefficients.withUnsafeMutableBufferPointer { cp in
                    guard let ib = ip.baseAddress, let cb = cp.baseAddress else { return }
                    encoder.encode(count: count, vectors: vectors, indices: ib, coefficients: cb)
                }
            }
            var residual = [Double](repeating: 0, count: count)  // (count) one-atom residual energy
            var sse = 0.0
            for b in 0..<count {
                let c = Double(coefficients[b])
                residual[b] = max(0, energy[b] - c * c)
                sse += residual[b]
            }
            progress(iteration, sse / Double(count * m), NeuralDictTrainer.diversityLoss(of: dictionary).loss)

            // Update: the power-iteration step, sum <x, d_n> x per cluster.
            for i in centroids.indices { centroids[i] = 0 }
            for i in members.indices { members[i] = 0 }
            for b in 0..<count {
                let a = Int(indices[b]), c = coefficients[b]
                guard c != 0 else { continue }
                members[a] += 1
                for i in 0..<m { centroids[a * m + i] += c * vectors[b * m + i] }
            }
            reseedEmpty(&centroids, members: members, vectors: vectors, count: count, dimension: m,
                        residual: residual)
        }
        return try SparseDictionary(atoms: centroids, atomCount: n, dimension: m)
    }

    /// Below this squared norm a vector cannot be a seed (it could not be normalised).
    static let minEnergy = 1e-30

    /// Replaces each centroid with no members (or a sum too small to normalise) by a training
    /// vector not yet used, worst-fitted first.
    private static func reseedEmpty(_ centroids: inout [Float], members: [Int], vectors: UnsafePointer<Float>,
                                    count: Int, dimension m: Int, residual: [Double]) {
        let empty = members.indices.filter { a in
            members[a] == 0 || (0..<m).reduce(0.0) { $0 + Double(centroids[a * m + $1]) * Double(centroids[a * m + $1]) } <= minEnergy
        }
        guard !empty.isEmpty else { return }
        // Stable order (index breaks ties), so the same input reseeds the same way.
        let worst = (0..<count).sorted { residual[$0] > residual[$1] || (residual[$0] == residual[$1] && $0 < $1) }
        var next = 0
        for a in empty {
            // Zero vectors cannot be atoms. At least N vectors are non-zero (the seeds), so
            // there are enough for every empty cluster.
            while next < count, (0..<m).allSatisfy({ vectors[worst[next] * m + $0] == 0 }) { next += 1 }
            guard next < count else { return }
            for i in 0..<m { centroids[a * m + i] = vectors[worst[next] * m + i] }
            next += 1
        }
    }
}
