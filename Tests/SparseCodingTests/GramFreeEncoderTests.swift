import Testing
@testable import SparseCoding

/// An encoder that does not keep the Gram matrix (serving) codes exactly as one that
/// does: small batches compute each chosen atom's Gram row when needed (the rows in
/// lockstep), large ones a Gram matrix for the call only. Dimension 20
/// takes the kernel's tail past the last 8 floats.
@Test(arguments: [32, 20]) func encoderWithoutAKeptGramGivesTheSameCodes(dimension: Int) throws {
    let d = try SparseDictionary(randomAtomCount: 512, dimension: dimension, seed: 21)
    var sig = Signals(seed: 22)
    // 1, 3, 5 rows: Gram rows on demand (5 * 6 < 512); 200 rows: a Gram matrix for the call.
    for count in [1, 3, 5, 200] {
        let x = sig.gaussian(count: count, dimension: dimension)
        for algorithm in PursuitAlgorithm.allCases {
            let kept = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 6, algorithm: algorithm))
                .encode(x, count: count)
            let free = try MatchingPursuitEncoder(
                dictionary: d, options: .init(sparsity: 6, algorithm: algorithm, keepsGram: false)).encode(x, count: count)
            #expect(free.indices == kept.indices, "\(algorithm), \(count) rows")
            let worst = zip(free.coefficients, kept.coefficients).map { abs($0 - $1) }.max() ?? 1
            #expect(worst < 1e-5, "\(algorithm), \(count) rows: \(worst)")
        }
    }
}


/// Small batches step their rows together; the tracer codes the same rows one by one with
/// the same Gram-row arithmetic, so the pairs are bit for bit the same.
@Test func lockstepRowsCodeAsRowsOneByOne() throws {
    let d = try SparseDictionary(randomAtomCount: 256, dimension: 64, seed: 23)
    var sig = Signals(seed: 24)
    let x = sig.gaussian(count: 7, dimension: 64)
    let encoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 8, keepsGram: false))
    let together = try encoder.encode(x, count: 7)
    let oneByOne = try encoder.trace(x, count: 7).codes
    #expect(together.indices == oneByOne.indices)
    #expect(together.coefficients == oneByOne.coefficients)
}
