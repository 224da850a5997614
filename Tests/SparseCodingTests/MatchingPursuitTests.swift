import Testing
@testable import SparseCoding

// MARK: - Recovery of sparse signals

/// With orthonormal atoms each MP step removes exactly one component, largest first, so
/// every signal is recovered exactly: support in order of magnitude and coefficients.
@Test(arguments: ["identity", "rotation"])
func orthonormalDictionaryRecoversEverySignalExactly(_ kind: String) throws {
    let m = 64
    var sig = Signals(seed: 21)
    let atoms = kind == "identity" ? (0..<(m * m)).map { Float($0 / m == $0 % m ? 1 : 0) } : sig.rotation(dimension: m)
    let d = try SparseDictionary(atoms: atoms, atomCount: m, dimension: m)
    let count = 500, s = 3
    let (x, truth) = sig.sparseSignals(count: count, sparsity: s, dictionary: d, magnitudes: 0.5...2)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count)
    var exact = 0
    for b in 0..<count {
        let got = codes.pairs(of: b)
        if zip(got, truth[b]).allSatisfy({ $0.index == $1.atom && abs($0.coefficient - $1.coefficient) < 1e-5 }) { exact += 1 }
    }
    #expect(exact == count)
}

/// Random atoms are not orthogonal, so MP's s-step coefficients of an s-sparse signal
/// carry cross-talk (c_i + sum_j c_j <d_i, d_j>): the support is what s steps must find.
/// Run longer, MP keeps choosing only true atoms and the per-atom sums converge to the
/// true coefficients.
@Test func randomDictionaryRecoversSupportAndCoefficients() throws {
    let d = try SparseDictionary(randomAtomCount: 256, dimension: 64, seed: 7)
    var sig = Signals(seed: 11)
    let count = 1000, s = 3
    let (x, truth) = sig.sparseSignals(count: count, sparsity: s, dictionary: d, magnitudes: 0.5...1.5)

    let short = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count)
    let supports = (0..<count).filter { b in
        Set(short.pairs(of: b).map(\.index)) == Set(truth[b].map(\.atom))
    }.count
    #expect(supports >= count * 95 / 100)

    let long = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 4 * s)).encode(x, count: count)
    let recovered = (0..<count).filter { b in
        var sums: [Int: Float] = [:]
        for (i, c) in long.pairs(of: b) { sums[i, default: 0] += c }
        let trueAtoms = Dictionary(uniqueKeysWithValues: truth[b].map { ($0.atom, $0.coefficient) })
        let atomsOK = sums.allSatisfy { trueAtoms[$0.key] != nil || abs($0.value) < 1e-3 }
        let coefsOK = trueAtoms.allSatisfy { abs((sums[$0.key] ?? 0) - $0.value) < 1e-2 }
        return atomsOK && coefsOK
    }.count
    #expect(recovered >= count * 95 / 100)
}

/// The Gram-updated loop must make the same choices as textbook MP that recomputes
/// every correlation from the residual (in Double).
@Test func encoderAgreesWithReferenceMatchingPursuit() throws {
    let d = try SparseDictionary(randomAtomCount: 300, dimension: 32, seed: 3)
    var sig = Signals(seed: 4)
    let count = 200, s = 10
    let x = sig.gaussian(count: count, dimension: 32)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count)
    var agree = 0
    for b in 0..<count {
        let (ri, rc) = referenceMatchingPursuit(x[(b * 32)..<((b + 1) * 32)], dictionary: d, sparsity: s)
        let got = codes.pairs(of: b)
        if zip(got, zip(ri, rc)).allSatisfy({ $0.index == $1.0 && abs(Double($0.coefficient) - $1.1) < 1e-4 }) { agree += 1 }
    }
    // Float round-off may flip a near-tie between two atoms late in a few rows.
    #expect(agree >= count * 98 / 100)
}

// MARK: - Step-by-step checks (trace)

@Test(arguments: PursuitAlgorithm.allCases)
func residualNormNeverGrows(_ algorithm: PursuitAlgorithm) throws {
    let d = try SparseDictionary(randomAtomCount: 512, dimension: 64, seed: 8)
    var sig = Signals(seed: 9)
    let count = 100, s = 16
    let x = sig.gaussian(count: count, dimension: 64)
    let trace = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: algorithm)).trace(x, count: count)
    var strictDrops = 0
    for b in 0..<count {
        let norms = trace.residualNorms[(b * (s + 1))..<((b + 1) * (s + 1))]
        #expect(norms.first.map { $0 > 1 } == true)
        for (prev, next) in zip(norms, norms.dropFirst()) {
            #expect(next <= prev * (1 + 1e-6))
            if next < prev * 0.9999 { strictDrops += 1 }
        }
    }
    // Random data leaves something to remove at every step.
    #expect(strictDrops >= count * s * 9 / 10)
}

@Test(arguments: PursuitAlgorithm.allCases)
func gramUpdatedCorrelationsEqualRecomputedOnes(_ algorithm: PursuitAlgorithm) throws {
    let d = try SparseDictionary(randomAtomCount: 1024, dimension: 64, seed: 12)
    var sig = Signals(seed: 13)
    let count = 40, s = 16
    let x = sig.gaussian(count: count, dimension: 64)
    let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: algorithm, threads: 1))
    let trace = try enc.trace(x, count: count)
    #expect(trace.correlationDrift.count == count * s)
    #expect(trace.correlationDrift.allSatisfy { $0 <= 1e-4 })
    // Tracing must not change what is encoded (with the same chunks: the sgemm's
    // rounding may depend on how many rows it multiplies at once).
    let codes = try enc.encode(x, count: count)
    #expect(trace.codes == codes)
}

// MARK: - Approximation quality

@Test func errorShrinksAsSparsityGrows() throws {
    let d = try SparseDictionary(randomAtomCount: 1024, dimension: 64, seed: 14)
    var sig = Signals(seed: 15)
    let count = 500
    let x = sig.gaussian(count: count, dimension: 64)
    var previous = meanSquaredError(x, [Float](repeating: 0, count: x.count))
    for s in [1, 2, 4, 8, 16, 32] {
        let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: count)
        let mse = meanSquaredError(x, try d.decode(codes))
        #expect(mse < previous * 0.95, "s = \(s): MSE \(mse) not below \(previous)")
        previous = mse
    }
}

// MARK: - Batching

/// Chunk boundaries and threads only partition rows; codes must not depend on them.
@Test func chunkingAndThreadsDoNotChangeCodes() throws {
    let d = try SparseDictionary(randomAtomCount: 700, dimension: 24, seed: 16)
    var sig = Signals(seed: 17)
    let count = 1001
    let x = sig.gaussian(count: count, dimension: 24)
    for algorithm in PursuitAlgorithm.allCases {
        let base = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 6, algorithm: algorithm, chunkRows: 4096, threads: 1))
            .encode(x, count: count)
        for (chunk, threads) in [(1, 2), (7, 2), (256, 2), (1000, 3)] {
            let other = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 6, algorithm: algorithm, chunkRows: chunk, threads: threads))
                .encode(x, count: count)
            #expect(other.indices == base.indices, "\(algorithm) chunk \(chunk) threads \(threads)")
            let worst = zip(other.coefficients, base.coefficients).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-5, "\(algorithm) chunk \(chunk) threads \(threads)")
        }
    }
}

@Test func pointerEncodeMatchesArrayEncode() throws {
    let d = try SparseDictionary(randomAtomCount: 64, dimension: 8, seed: 18)
    var sig = Signals(seed: 19)
    let x = sig.gaussian(count: 33, dimension: 8)
    let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 5))
    let codes = try enc.encode(x, count: 33)
    var idx = [UInt16](repeating: 9999, count: 33 * 5), coef = [Float](repeating: .nan, count: 33 * 5)
    x.withUnsafeBufferPointer { xp in
        idx.withUnsafeMutableBufferPointer { ip in
            coef.withUnsafeMutableBufferPointer { cp in
                enc.encode(count: 33, vectors: xp.baseAddress!, indices: ip.baseAddress!, coefficients: cp.baseAddress!)
            }
        }
    }
    #expect(idx == codes.indices && coef == codes.coefficients)
}

// MARK: - Edge cases

@Test func emptyBatchAndZeroVectors() throws {
    let d = try SparseDictionary(randomAtomCount: 16, dimension: 4, seed: 20)
    let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 3))
    let empty = try enc.encode([], count: 0)
    #expect(empty.count == 0 && empty.indices.isEmpty)
    let zeros = try enc.encode([Float](repeating: 0, count: 8), count: 2)
    #expect(zeros.coefficients.allSatisfy { $0 == 0 })
    let decoded = try d.decode(zeros)
    #expect(decoded.allSatisfy { $0 == 0 })
}

@Test func nonFiniteInputGivesValidIndices() throws {
    let d = try SparseDictionary(randomAtomCount: 16, dimension: 4, seed: 22)
    for algorithm in PursuitAlgorithm.allCases {
        let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 4, algorithm: algorithm))
        let codes = try enc.encode([.nan, 1, 2, 3, .infinity, 0, 0, 0], count: 2)
        #expect(codes.indices.allSatisfy { Int($0) < 16 })
    }
}

@Test func badSettingsAndShapesAreRejected() throws {
    let d = try SparseDictionary(randomAtomCount: 16, dimension: 4, seed: 23)
    #expect(throws: SparseCodingError.badSparsity(sparsity: 0, atomCount: 16, algorithm: "MP")) {
        try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 0))
    }
    #expect(throws: SparseCodingError.badSparsity(sparsity: 17, atomCount: 16, algorithm: "OMP")) {
        try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 17, algorithm: .orthogonal))
    }
    // MP may reuse atoms, so s > N is allowed.
    _ = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 17))
    let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 2))
    #expect(throws: SparseCodingError.badVectorCount(elements: 7, dimension: 4, count: 2)) {
        try enc.encode([Float](repeating: 1, count: 7), count: 2)
    }
    // A count whose size overflows is an error too, with a message that does not overflow.
    let huge = SparseCodingError.badVectorCount(elements: 8, dimension: 4, count: Int.max / 2)
    #expect(throws: huge) { try enc.encode([Float](repeating: 1, count: 8), count: Int.max / 2) }
    #expect(huge.errorDescription?.isEmpty == false)
    #expect(throws: SparseCodingError.self) { try enc.encode([Float](repeating: 1, count: 8), count: -2) }
}
