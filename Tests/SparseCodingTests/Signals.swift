@testable import SparseCoding

// MARK: - Synthetic signals and dictionaries shared by the tests

/// Deterministic test data from one seeded generator.
struct Signals {
    var rng: Xoshiro256StarStar

    init(seed: UInt64) { rng = Xoshiro256StarStar(seed: seed) }

    /// (count, m) standard normal values.
    mutating func gaussian(count: Int, dimension m: Int) -> [Float] {
        (0..<(count * m)).map { _ in rng.nextGaussian() }
    }

    /// A random orthogonal (m, m) matrix, rows orthonormal (Gram-Schmidt in Double on
    /// Gaussian rows).
    mutating func rotation(dimension m: Int) -> [Float] {
        var rows: [[Double]] = []
        while rows.count < m {
            var v = (0..<m).map { _ in Double(rng.nextGaussian()) }
            for r in rows {
                let dot = zip(v, r).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<m { v[i] -= dot * r[i] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm > 1e-6 else { continue }
            rows.append(v.map { $0 / norm })
        }
        return rows.flatMap { $0.map(Float.init) }
    }

    /// `count` signals that are exact combinations of `s` distinct atoms, with coefficient
    /// magnitudes drawn from `magnitudes` (distinct within a signal) and random signs.
    ///
    /// - Returns: signals (count, m), and per signal the true (atom, coefficient) pairs
    ///   sorted by decreasing magnitude.
    mutating func sparseSignals(count: Int, sparsity s: Int, dictionary: SparseDictionary,
                                magnitudes: ClosedRange<Float>) -> ([Float], [[(atom: Int, coefficient: Float)]]) {
        let m = dictionary.dimension, n = dictionary.atomCount
        var x = [Float](repeating: 0, count: count * m)
        var truth: [[(atom: Int, coefficient: Float)]] = []
        for b in 0..<count {
            var atoms: [Int] = []
            while atoms.count < s {
                let a = Int(rng.next() % UInt64(n))
                if !atoms.contains(a) { atoms.append(a) }
            }
            var mags: [Float] = []
            while mags.count < s {
                let v = magnitudes.lowerBound + rng.nextUnitFloat() * (magnitudes.upperBound - magnitudes.lowerBound)
                if mags.allSatisfy({ abs($0 - v) > 0.05 }) { mags.append(v) }
            }
            var pairs: [(atom: Int, coefficient: Float)] = []
            for (a, mag) in zip(atoms, mags) {
                let c = rng.next() & 1 == 0 ? mag : -mag
                pairs.append((a, c))
                for i in 0..<m { x[b * m + i] += c * dictionary.atoms[a * m + i] }
            }
            truth.append(pairs.sorted { abs($0.coefficient) > abs($1.coefficient) })
        }
        return (x, truth)
    }
}

/// Mean squared error per element between two equally long arrays.
func meanSquaredError(_ a: [Float], _ b: [Float]) -> Double {
    zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) } / Double(max(1, a.count))
}

/// Reference MP in Double, recomputing correlations from the residual at every step:
/// what the encoder's Gram-updated loop must agree with. Returns (s) indices, coefficients.
func referenceMatchingPursuit(_ x: ArraySlice<Float>, dictionary d: SparseDictionary, sparsity s: Int) -> ([Int], [Double]) {
    let m = d.dimension
    var r = x.map(Double.init)
    var indices: [Int] = [], coefficients: [Double] = []
    for _ in 0..<s {
        var best = 0, bestValue = -1.0, bestC = 0.0
        for a in 0..<d.atomCount {
            var dot = 0.0
            for i in 0..<m { dot += r[i] * Double(d.atoms[a * m + i]) }
            if abs(dot) > bestValue {
                bestValue = abs(dot)
                best = a
                bestC = dot
            }
        }
        for i in 0..<m { r[i] -= bestC * Double(d.atoms[best * m + i]) }
        indices.append(best)
        coefficients.append(bestC)
    }
    return (indices, coefficients)
}
