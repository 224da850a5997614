import Testing
@testable import SparseCoding

/// An encoder that does not keep the Gram matrix (serving) codes exactly as one that
/// does: small batches compute each chosen atom's Gram row when needed, large ones a Gram
/// matrix for the call only.
@Test func encoderWithoutAKeptGramGivesTheSameCodes() throws {
    let d = try SparseDictionary(randomAtomCount: 512, dimension: 32, seed: 21)
    var sig = Signals(seed: 22)
    // 3 rows: Gram rows on demand (3 * 6 < 512); 200 rows: a Gram matrix for the call.
    for count in [1, 3, 200] {
        let x = sig.gaussian(count: count, dimension: 32)
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
