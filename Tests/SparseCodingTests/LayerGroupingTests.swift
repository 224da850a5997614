import Foundation
import Testing
@testable import SparseCoding

// MARK: - Synthetic layers

/// (count, m) Gaussian vectors: standard normal scaled by `scale`, then `shift` added to
/// component 0.
private func gaussianLayer(_ signals: inout Signals, count: Int, dimension m: Int,
                           shift: Float = 0, scale: Float = 1) -> [Float] {
    var x = signals.gaussian(count: count, dimension: m)  // (count, m)
    for r in 0..<count {
        for i in 0..<m { x[r * m + i] *= scale }
        x[r * m] += shift
    }
    return x
}

/// Checks what every grouping must satisfy: contiguous non-empty groups covering
/// 0 ..< L in order, each within both thresholds and the size limit.
private func expectValidGroups(_ result: LayerGroupingResult, _ options: LayerGroupingOptions) {
    let l = result.layerCount
    #expect(result.groups.first?.lowerBound == 0)
    #expect(result.groups.last?.upperBound == l)
    for (a, b) in zip(result.groups, result.groups.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
    for (g, group) in result.groups.enumerated() {
        #expect(!group.isEmpty)
        if let size = options.maxGroupSize { #expect(group.count <= size) }
        var chain = 0.0
        for j in group {
            #expect(result.group(ofLayer: j) == g)
            for i in group where i < j { #expect(result.js(i, j) <= options.delta1) }
            if j > group.lowerBound { chain += result.js(j - 1, j) }
        }
        #expect(chain <= options.delta2)
    }
    #expect(result.group(ofLayer: -1) == nil && result.group(ofLayer: l) == nil)
}

// MARK: - Jensen-Shannon divergence

@Test func jensenShannonOfIdenticalDistributionsIsZero() throws {
    var rng = Xoshiro256StarStar(seed: 3)
    let p = (0..<1000).map { _ in Double(rng.nextUnitFloat()) * (rng.next() % 3 == 0 ? 0 : 1) }
    #expect(try LayerGrouping.jensenShannon(p, p) == 0)
    // Counts are normalized: the same distribution in other units is still the same.
    #expect(try LayerGrouping.jensenShannon(p, p.map { $0 * 7 }) < 1e-12)
}

@Test func jensenShannonOfDisjointDistributionsIsOne() throws {
    let p: [Double] = [0.2, 0.3, 0, 0, 0.5, 0]
    let q: [Double] = [0, 0, 4, 1, 0, 5]
    #expect(abs(try LayerGrouping.jensenShannon(p, q) - 1) < 1e-12)
}

@Test func jensenShannonIsSymmetricAndMatchesAHandComputedValue() throws {
    // P = (1, 0), Q = (1/2, 1/2), M = (3/4, 1/4).
    let expected = 0.5 * log2(1 / 0.75) + 0.5 * (0.5 * log2(0.5 / 0.75) + 0.5 * log2(0.5 / 0.25))
    #expect(abs(try LayerGrouping.jensenShannon([1, 0], [0.5, 0.5]) - expected) < 1e-12)
    #expect(abs(expected - 0.311278) < 1e-6)

    var rng = Xoshiro256StarStar(seed: 4)
    let p = (0..<500).map { _ in Double(rng.nextUnitFloat()) }
    let q = (0..<500).map { _ in Double(rng.nextUnitFloat()) }
    let pq = try LayerGrouping.jensenShannon(p, q), qp = try LayerGrouping.jensenShannon(q, p)
    #expect(pq == qp)
    #expect(pq > 0 && pq < 0.2)
}

@Test func jensenShannonRejectsWhatIsNotADistribution() {
    #expect(throws: LayerGroupingError.distributionLengthMismatch(first: 2, second: 3)) {
        try LayerGrouping.jensenShannon([1, 0], [1, 0, 0])
    }
    #expect(throws: LayerGroupingError.badProbability(index: 1, value: -0.5)) {
        try LayerGrouping.jensenShannon([1, -0.5], [1, 0])
    }
    #expect(throws: LayerGroupingError.emptyDistribution) { try LayerGrouping.jensenShannon([1, 0], [0, 0]) }
    #expect(throws: LayerGroupingError.emptyDistribution) { try LayerGrouping.jensenShannon([], []) }
    #expect(throws: (any Error).self) { try LayerGrouping.jensenShannon([1, .nan], [1, 0]) }
}

// MARK: - Grouping a divergence matrix

/// (L, L) matrix with `adjacent` between neighbours and `far` between all other pairs.
private func bandMatrix(_ l: Int, adjacent: Double, far: Double) -> [Double] {
    var d = [Double](repeating: 0, count: l * l)
    for i in 0..<l {
        for j in 0..<l where i != j { d[i * l + j] = abs(i - j) == 1 ? adjacent : far }
    }
    return d
}

@Test func groupAdjacentAppliesEachRule() throws {
    // delta1: neighbours are close, but layer 2 is too far from layer 0 to join it.
    let drift = bandMatrix(4, adjacent: 0.04, far: 0.06)
    #expect(try LayerGrouping.groupAdjacent(divergence: drift, layerCount: 4,
                                            options: .init(delta1: 0.05, delta2: 1)) == [0..<2, 2..<4])
    // delta2: every pair is close, but the adjacent steps add up (0.04, 0.08, 0.12 > 0.1).
    let even = bandMatrix(6, adjacent: 0.04, far: 0.04)
    #expect(try LayerGrouping.groupAdjacent(divergence: even, layerCount: 6,
                                            options: .init(delta1: 0.05, delta2: 0.1)) == [0..<3, 3..<6])
    // maxGroupSize.
    let same = bandMatrix(5, adjacent: 0, far: 0)
    #expect(try LayerGrouping.groupAdjacent(divergence: same, layerCount: 5,
                                            options: .init(maxGroupSize: 2)) == [0..<2, 2..<4, 4..<5])
    #expect(try LayerGrouping.groupAdjacent(divergence: same, layerCount: 5) == [0..<5])
    // No limits at all: one group whatever the divergences.
    #expect(try LayerGrouping.groupAdjacent(divergence: bandMatrix(3, adjacent: 1, far: 1), layerCount: 3,
                                            options: .init(delta1: .infinity, delta2: .infinity)) == [0..<3])
    // A NaN divergence counts as too far; one layer is one group.
    var unknown = same
    unknown[2 * 5 + 3] = .nan
    #expect(try LayerGrouping.groupAdjacent(divergence: unknown, layerCount: 5) == [0..<3, 3..<5])
    #expect(try LayerGrouping.groupAdjacent(divergence: [0], layerCount: 1) == [0..<1])
}

@Test func groupAdjacentRejectsBadInput() {
    #expect(throws: LayerGroupingError.noLayers) { try LayerGrouping.groupAdjacent(divergence: [], layerCount: 0) }
    #expect(throws: LayerGroupingError.badDivergenceShape(layerCount: 3, elements: 6)) {
        try LayerGrouping.groupAdjacent(divergence: [Double](repeating: 0, count: 6), layerCount: 3)
    }
    #expect(throws: LayerGroupingError.badThreshold(name: "delta2", value: -1)) {
        try LayerGrouping.groupAdjacent(divergence: [0], layerCount: 1, options: .init(delta2: -1))
    }
    #expect(throws: LayerGroupingError.badMaxGroupSize(0)) {
        try LayerGrouping.groupAdjacent(divergence: [0], layerCount: 1, options: .init(maxGroupSize: 0))
    }
}

// MARK: - Grouping layer samples

@Test func layersFromOneDistributionFormOneGroup() throws {
    var sig = Signals(seed: 10)
    let m = 16
    let layers = (0..<6).map { _ in gaussianLayer(&sig, count: 3000, dimension: m) }
    let options = LayerGroupingOptions()
    let result = try LayerGrouping.group(layers: layers, dimension: m, options: options)
    #expect(result.groups == [0..<6])
    #expect(result.layerCount == 6 && result.divergence.count == 36 && result.sampleCounts == [Int](repeating: 3000, count: 6))
    for i in 0..<6 {
        #expect(result.js(i, i) == 0)
        for j in 0..<6 where j != i {
            // Independent samples are not identical, but differ only by sampling noise.
            #expect(result.js(i, j) > 0 && result.js(i, j) < 0.02)
            #expect(result.js(i, j) == result.js(j, i))
        }
    }
    expectValidGroups(result, options)
}

@Test(arguments: [(shift: Float(1), scale: Float(1)), (shift: 0, scale: 2)])
func layersFromADifferentDistributionFormTheirOwnGroup(shift: Float, scale: Float) throws {
    var sig = Signals(seed: 11)
    let m = 16
    let layers = (0..<6).map { l in
        l < 3 ? gaussianLayer(&sig, count: 3000, dimension: m)
              : gaussianLayer(&sig, count: 3000, dimension: m, shift: shift, scale: scale)
    }
    let result = try LayerGrouping.group(layers: layers, dimension: m)
    #expect(result.groups == [0..<3, 3..<6])
    for i in 0..<3 {
        for j in 3..<6 { #expect(result.js(i, j) > 0.1) }
    }
    #expect(result.js(0, 1) < 0.02 && result.js(4, 5) < 0.02)
    expectValidGroups(result, LayerGroupingOptions())
}

@Test func zeroDelta1PutsEveryLayerAlone() throws {
    var sig = Signals(seed: 12)
    let layers = (0..<6).map { _ in gaussianLayer(&sig, count: 1000, dimension: 8) }
    let options = LayerGroupingOptions(delta1: 0)
    let result = try LayerGrouping.group(layers: layers, dimension: 8, options: options)
    #expect(result.groups == (0..<6).map { $0..<($0 + 1) })
    expectValidGroups(result, options)
}

@Test func gradualDriftGivesContiguousGroupsWithinTheThresholds() throws {
    var sig = Signals(seed: 13)
    let m = 12
    // The mean moves 0.15 sd per layer: neighbours merge, distant layers must not.
    let layers = (0..<12).map { l in gaussianLayer(&sig, count: 2000, dimension: m, shift: 0.15 * Float(l)) }
    for options in [LayerGroupingOptions(), .init(delta2: 0.03), .init(maxGroupSize: 2)] {
        let result = try LayerGrouping.group(layers: layers, dimension: m, options: options)
        expectValidGroups(result, options)
        #expect(result.groups.count > 1 && result.groups.count < 12)
    }
}

@Test func outliersDoNotHideDifferences() throws {
    var sig = Signals(seed: 14)
    let m = 16
    var layers = (0..<4).map { l in gaussianLayer(&sig, count: 3000, dimension: m, shift: l < 2 ? 0 : 1) }
    // One huge vector: a min ... max histogram range would squeeze every layer into a
    // few bins and make all four look alike.
    for i in 0..<m { layers[0][i] = 10_000 }
    let result = try LayerGrouping.group(layers: layers, dimension: m)
    #expect(result.groups == [0..<2, 2..<4])
}

@Test func rawHistogramsAreDominatedBySamplingNoise() throws {
    // Why smoothing is on by default: without it, two samples of 2,000 points from one
    // distribution spread over 40,000 bins barely overlap.
    var sig = Signals(seed: 15)
    let layers = (0..<2).map { _ in gaussianLayer(&sig, count: 2000, dimension: 8) }
    let raw = try LayerGrouping.group(layers: layers, dimension: 8, options: .init(smoothing: 0))
    let smoothed = try LayerGrouping.group(layers: layers, dimension: 8)
    #expect(raw.js(0, 1) > 0.5)
    #expect(raw.groups == [0..<1, 1..<2])
    #expect(smoothed.js(0, 1) < 0.02)
}

@Test func subsamplingIsSeededAndBounded() throws {
    var sig = Signals(seed: 16)
    let m = 8
    let layers = [5000, 800, 3000].map { gaussianLayer(&sig, count: $0, dimension: m) }
    let options = LayerGroupingOptions(maxSamplesPerLayer: 1000, seed: 7)
    let a = try LayerGrouping.group(layers: layers, dimension: m, options: options)
    let b = try LayerGrouping.group(layers: layers, dimension: m, options: options)
    var other = options
    other.seed = 8
    let c = try LayerGrouping.group(layers: layers, dimension: m, options: other)
    #expect(a.sampleCounts == [1000, 800, 1000])
    #expect(a == b)
    #expect(a.divergence != c.divergence)

    let rows = LayerGrouping.sampleRows(counts: [5000, 800, 0], limit: 1000, seed: 7)
    #expect(rows[0].count == 1000 && Set(rows[0]).count == 1000 && rows[0] == rows[0].sorted())
    #expect(rows[0].allSatisfy { (0..<5000).contains($0) })
    #expect(rows[1] == Array(0..<800) && rows[2].isEmpty)
    // A layer's rows depend on its position and count, not on the other layers.
    #expect(LayerGrouping.sampleRows(counts: [10, 800, 5000], limit: 1000, seed: 7)[2]
            == LayerGrouping.sampleRows(counts: [5000, 800, 5000], limit: 1000, seed: 7)[2])
}

// MARK: - PCA

@Test func principalPlaneFindsTheDominantDirections() {
    var sig = Signals(seed: 17)
    let m = 8, n = 4000
    var x = gaussianLayer(&sig, count: n, dimension: m)
    for r in 0..<n {
        x[r * m + 2] = 5 * x[r * m + 2] + 3
        x[r * m + 6] *= 3
    }
    let plane = LayerGrouping.principalPlane(layers: [x], rows: [Array(0..<n)], dimension: m)
    #expect(abs(plane.axes[2]) > 0.999)
    #expect(abs(plane.axes[m + 6]) > 0.999)
    #expect(abs(plane.mean[2] - 3) < 0.3)
    #expect(abs(plane.variances[0] - 25) < 2 && abs(plane.variances[1] - 9) < 1)
    #expect(abs(plane.explainedVariance - 34.0 / 40) < 0.03)
    // Projections are centred coordinates along the axes.
    let p = plane.project(x, rows: [0])
    let expected0 = (0..<m).reduce(0.0) { $0 + (Double(x[$1]) - plane.mean[$1]) * plane.axes[$1] }
    #expect(abs(p[0] - expected0) < 1e-9)
}

@Test func symmetricEigenDiagonalizes() {
    var rng = Xoshiro256StarStar(seed: 18)
    let n = 10
    var a = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in i..<n {
            let v = Double(rng.nextGaussian())
            a[i * n + j] = v
            a[j * n + i] = v
        }
    }
    for matrix in [a, (0..<(n * n)).map { $0 % (n + 1) == 0 ? 2.0 : 0 }] {  // random; 2 I (repeated)
        let (values, vectors) = LayerGrouping.symmetricEigen(matrix, dimension: n)
        #expect(values == values.sorted(by: >))
        for k in 0..<n {
            for i in 0..<n {
                let av = (0..<n).reduce(0.0) { $0 + matrix[i * n + $1] * vectors[k * n + $1] }
                #expect(abs(av - values[k] * vectors[k * n + i]) < 1e-10)
            }
            for l in 0..<n {
                let dot = (0..<n).reduce(0.0) { $0 + vectors[k * n + $1] * vectors[l * n + $1] }
                #expect(abs(dot - (k == l ? 1 : 0)) < 1e-12)
            }
        }
    }
}

// MARK: - Errors

@Test func badSamplesAndOptionsAreRejectedWithTheirContext() {
    let good: [Float] = [1, 2, 3, 4, 5, 6]  // (3, 2)
    let cases: [(LayerGroupingError, [[Float]], Int, LayerGroupingOptions)] = [
        (.noLayers, [], 2, .init()),
        (.dimensionTooSmall(dimension: 1), [good], 1, .init()),
        (.emptyLayer(layer: 1), [good, [], good], 2, .init()),
        (.badLayerShape(layer: 2, elements: 5, dimension: 2), [good, good, [1, 2, 3, 4, 5]], 2, .init()),
        (.nonFiniteValue(layer: 1, vector: 2, component: 1), [good, [1, 2, 3, 4, 5, .infinity]], 2, .init()),
        (.nonFiniteValue(layer: 0, vector: 0, component: 0), [[.nan, 0]], 2, .init()),
        (.badBins(1), [good], 2, .init(bins: 1)),
        (.badBins(100_000), [good], 2, .init(bins: 100_000)),
        (.badThreshold(name: "delta1", value: -0.1), [good], 2, .init(delta1: -0.1)),
        (.badMaxSamplesPerLayer(0), [good], 2, .init(maxSamplesPerLayer: 0)),
        (.badSmoothing(-1), [good], 2, .init(smoothing: -1)),
        (.badMaxGroupSize(0), [good], 2, .init(maxGroupSize: 0)),
    ]
    for (error, layers, m, options) in cases {
        #expect(throws: error) { try LayerGrouping.group(layers: layers, dimension: m, options: options) }
        #expect(error.errorDescription?.isEmpty == false)
    }
    #expect(throws: (any Error).self) {
        try LayerGrouping.group(layers: [good], dimension: 2, options: .init(delta2: .nan))
    }
}

@Test func degenerateSamplesStillGroup() throws {
    // Constant vectors (no variance at all) and a single vector per layer.
    let constant = [Float](repeating: 1, count: 40)  // (10, 4)
    let result = try LayerGrouping.group(layers: [constant, constant, [1, 2, 3, 4]], dimension: 4)
    #expect(result.layerCount == 3)
    #expect(result.js(0, 1) == 0)
    #expect(result.divergence.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 })
    expectValidGroups(result, LayerGroupingOptions())
}
