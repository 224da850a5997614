import Testing
@testable import SparseCoding

// OMP is optional: these tests check that it does what it promises (exact coefficients
// once the support is right, never worse than MP) so its measured gain can be trusted.

@Test func ompRecoversSupportAndCoefficientsExactly() throws {
    let d = try SparseDictionary(randomAtomCount: 256, dimension: 64, seed: 7)
    var sig = Signals(seed: 31)
    let count = 1000, s = 3
    let (x, truth) = sig.sparseSignals(count: count, sparsity: s, dictionary: d, magnitudes: 0.5...1.5)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: .orthogonal)).encode(x, count: count)
    let exact = (0..<count).filter { b in
        var got: [Int: Float] = [:]
        for (i, c) in codes.pairs(of: b) { got[i, default: 0] += c }
        return got.count == s && truth[b].allSatisfy { t in
            guard let c = got[t.atom] else { return false }
            return abs(c - t.coefficient) < 1e-4
        }
    }.count
    #expect(exact >= count * 95 / 100)
}

@Test func ompErrorIsNeverAboveMPAtEqualSparsity() throws {
    let d = try SparseDictionary(randomAtomCount: 1024, dimension: 64, seed: 32)
    var sig = Signals(seed: 33)
    let count = 400
    let x = sig.gaussian(count: count, dimension: 64)
    for s in [2, 4, 8, 16] {
        let mp = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count)
        let omp = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: .orthogonal)).encode(x, count: count)
        let mpErr = meanSquaredError(x, try d.decode(mp)), ompErr = meanSquaredError(x, try d.decode(omp))
        #expect(ompErr <= mpErr * 1.0001, "s = \(s): OMP \(ompErr) vs MP \(mpErr)")
    }
}

@Test func ompNeverRepeatsAnAtom() throws {
    let d = try SparseDictionary(randomAtomCount: 128, dimension: 16, seed: 34)
    var sig = Signals(seed: 35)
    let x = sig.gaussian(count: 100, dimension: 16)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 12, algorithm: .orthogonal)).encode(x, count: 100)
    for b in 0..<100 {
        let used = codes.pairs(of: b).filter { $0.coefficient != 0 }.map(\.index)
        #expect(Set(used).count == used.count)
    }
}

/// Duplicate atoms (as an online dictionary sampled from a prompt may hold) make G[S, S]
/// singular; OMP must skip the duplicate instead of dividing by zero.
@Test func ompSkipsDuplicateAtoms() throws {
    var sig = Signals(seed: 36)
    let base = sig.gaussian(count: 8, dimension: 8)
    let atoms = base + base  // atoms 8..15 repeat 0..7
    let d = try SparseDictionary(atoms: atoms, atomCount: 16, dimension: 8)
    let x = sig.gaussian(count: 50, dimension: 8)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 8, algorithm: .orthogonal)).encode(x, count: 50)
    #expect(codes.coefficients.allSatisfy { $0.isFinite })
    // 8 independent atoms span R^8: the fit is exact although half the atoms are copies.
    let decoded = try d.decode(codes)
    #expect(meanSquaredError(x, decoded) < 1e-8)
}

/// The same with Gram rows on demand (one vector at a time, as a decode step codes): the
/// duplicates it skips need Gram rows too, and the fit is still exact.
@Test func ompWithGramRowsOnDemandSkipsDuplicateAtoms() throws {
    var sig = Signals(seed: 37)
    let base = sig.gaussian(count: 8, dimension: 8)
    let d = try SparseDictionary(atoms: base + base + base, atomCount: 24, dimension: 8)
    let encoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 8, algorithm: .orthogonal, keepsGram: false))
    let withGram = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 8, algorithm: .orthogonal))
    for _ in 0..<40 {
        let x = sig.gaussian(count: 1, dimension: 8)
        let codes = try encoder.encode(x, count: 1)  // 8 pairs < 24 atoms: no Gram matrix for the call
        #expect(codes.coefficients.allSatisfy { $0.isFinite })
        // Exact up to float round-off (one vector of unit-variance channels), as with a Gram matrix.
        #expect(meanSquaredError(x, try d.decode(codes)) < 1e-5)
        #expect(meanSquaredError(x, try d.decode(try withGram.encode(x, count: 1))) < 1e-5)
    }
}
