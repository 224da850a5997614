import Foundation

/// Groups adjacent transformer layers whose key (or value) vectors are distributed alike,
/// so that one dictionary can be trained per group instead of per layer (the CSR paper's
/// preparation stage).
///
/// The steps, in the order the data flows:
/// 1. each layer's sample is subsampled to at most ``LayerGroupingOptions/maxSamplesPerLayer``
///    vectors (seeded, so the result is reproducible);
/// 2. one PCA fitted on all layers' samples together projects every vector onto the same
///    2-D plane (the top two principal directions of the pooled covariance);
/// 3. each layer becomes a `bins x bins` histogram over one common range, smoothed with a
///    small Gaussian kernel (see ``LayerGroupingOptions/smoothing``) and normalized;
/// 4. the Jensen-Shannon divergence (base 2) between every pair of layers is computed;
/// 5. layers are grouped greedily from layer 0 up (``groupAdjacent(divergence:layerCount:options:)``).
public enum LayerGrouping {
    // MARK: - Grouping layer samples

    /// Groups layers by the distribution of their sample vectors.
    ///
    /// - Parameters:
    ///   - layers: layers[l] holds layer l's sample vectors, (count_l, dimension) row-major.
    ///     Counts may differ between layers.
    ///   - dimension: m, the length of each vector (at least 2).
    ///   - options: thresholds, histogram size, subsampling; see ``LayerGroupingOptions``.
    /// - Throws: `LayerGroupingError.noLayers`, `.dimensionTooSmall`, `.emptyLayer`,
    ///   `.badLayerShape`, `.nonFiniteValue` for bad samples (naming the layer), and the
    ///   option errors (`.badBins`, `.badThreshold`, ...) for options out of range.
    public static func group(layers: [[Float]], dimension m: Int,
                             options: LayerGroupingOptions = .init()) throws -> LayerGroupingResult {
        try options.validate()
        guard !layers.isEmpty else { throw LayerGroupingError.noLayers }
        guard m >= 2 else { throw LayerGroupingError.dimensionTooSmall(dimension: m) }
        for (l, layer) in layers.enumerated() { try check(layer, layer: l, dimension: m) }

        let rows = sampleRows(counts: layers.map { $0.count / m }, limit: options.maxSamplesPerLayer,
                              seed: options.seed)
        let plane = principalPlane(layers: layers, rows: rows, dimension: m)
        let points = zip(layers, rows).map { plane.project($0.0, rows: $0.1) }
        let histograms = smoothedHistograms(points: points, bins: options.bins, smoothing: options.smoothing)
        let divergence = divergenceMatrix(histograms)
        let groups = try groupAdjacent(divergence: divergence, layerCount: layers.count, options: options)
        return LayerGroupingResult(groups: groups, divergence: divergence, layerCount: layers.count,
                                   sampleCounts: rows.map(\.count), explainedVariance: plane.explainedVariance)
    }

    /// Throws unless `layer` is a non-empty whole number of finite m-vectors.
    private static func check(_ layer: [Float], layer l: Int, dimension m: Int) throws {
        guard !layer.isEmpty else { throw LayerGroupingError.emptyLayer(layer: l) }
        guard layer.count % m == 0 else {
            throw LayerGroupingError.badLayerShape(layer: l, elements: layer.count, dimension: m)
        }
        if let bad = layer.firstIndex(where: { !$0.isFinite }) {
            throw LayerGroupingError.nonFiniteValue(layer: l, vector: bad / m, component: bad % m)
        }
    }

    // MARK: - Grouping a divergence matrix

    /// Groups adjacent layers greedily from layer 0 up: layer l joins the current group iff
    /// (a) its divergence from every layer already in the group is at most `delta1`,
    /// (b) the divergences between adjacent layers of the group, (l - 1, l) included, sum
    /// to at most `delta2`, and (c) the group holds fewer than `maxGroupSize` layers.
    /// Otherwise layer l starts a new group.
    ///
    /// - Parameters:
    ///   - divergence: (L, L) row-major; entry (i, j) with i < j is read. A NaN entry
    ///     counts as too far.
    ///   - layerCount: L, at least 1.
    ///   - options: only `delta1`, `delta2` and `maxGroupSize` are used.
    /// - Returns: contiguous, non-empty groups covering 0 ..< L in order.
    /// - Throws: `LayerGroupingError.noLayers`, `.badDivergenceShape`, `.badThreshold`,
    ///   `.badMaxGroupSize`.
    public static func groupAdjacent(divergence: [Double], layerCount: Int,
                                     options: LayerGroupingOptions = .init()) throws -> [Range<Int>] {
        try options.validateThresholds()
        guard layerCount >= 1 else { throw LayerGroupingError.noLayers }
        let count = layerCount.multipliedReportingOverflow(by: layerCount)
        guard !count.overflow, divergence.count == count.partialValue else {
            throw LayerGroupingError.badDivergenceShape(layerCount: layerCount, elements: divergence.count)
        }
        let n = layerCount
        var groups: [Range<Int>] = []
        var start = 0
        var chain = 0.0  // sum over adjacent pairs of the current group
        for l in 1..<max(1, n) {
            let step = divergence[(l - 1) * n + l]
            let roomLeft = options.maxGroupSize.map { l - start < $0 } ?? true
            let closeToAll = (start..<l).allSatisfy { divergence[$0 * n + l] <= options.delta1 }
            if roomLeft && closeToAll && chain + step <= options.delta2 {
                chain += step
            } else {
                groups.append(start..<l)
                start = l
                chain = 0
            }
        }
        groups.append(start..<n)
        return groups
    }

    // MARK: - Comparing distributions

    /// The Jensen-Shannon divergence between two distributions over the same bins, in bits:
    /// 0 for identical distributions, 1 for disjoint ones, symmetric.
    ///
    /// JS(P, Q) = H(M) - (H(P) + H(Q)) / 2 with M = (P + Q) / 2 and H the base-2 entropy.
    ///
    /// - Parameters: p, q: non-negative weights per bin; each is divided by its own sum, so
    ///   counts may be passed as they are.
    /// - Throws: `LayerGroupingError.distributionLengthMismatch`, `.badProbability` for a
    ///   negative or non-finite entry, `.emptyDistribution` for an all-zero one.
    public static func jensenShannon(_ p: [Double], _ q: [Double]) throws -> Double {
        guard p.count == q.count else {
            throw LayerGroupingError.distributionLengthMismatch(first: p.count, second: q.count)
        }
        let pn = try normalized(p), qn = try normalized(q)
        return pn.withUnsafeBufferPointer { a in
            qn.withUnsafeBufferPointer { b in
                jensenShannon(a, b, negativeEntropies: (negativeEntropy(a), negativeEntropy(b)))
            }
        }
    }

    /// `weights` divided by their sum.
    private static func normalized(_ weights: [Double]) throws -> [Double] {
        var total = 0.0
        for (i, w) in weights.enumerated() {
            guard w.isFinite, w >= 0 else { throw LayerGroupingError.badProbability(index: i, value: w) }
            total += w
        }
        guard total > 0, total.isFinite else { throw LayerGroupingError.emptyDistribution }
        return weights.map { $0 / total }
    }

    /// Sum of p log2 p over the bins (0 log 0 = 0): minus the entropy in bits.
    static func negativeEntropy(_ p: UnsafeBufferPointer<Double>) -> Double {
        var sum = 0.0
        for x in p where x > 0 { sum += x * log2(x) }
        return sum
    }

    /// JS divergence of two normalized distributions, given their negative entropies.
    /// Identical inputs give exactly 0: M then equals P bit for bit and its entropy is summed
    /// by the same loop. Rounding can stray just outside [0, 1]; the result is clamped.
    static func jensenShannon(_ p: UnsafeBufferPointer<Double>, _ q: UnsafeBufferPointer<Double>,
                              negativeEntropies: (Double, Double)) -> Double {
        var mixture = 0.0  // sum of m log2 m
        for i in 0..<min(p.count, q.count) {
            let x = (p[i] + q[i]) * 0.5
            if x > 0 { mixture += x * log2(x) }
        }
        let js = (negativeEntropies.0 + negativeEntropies.1) * 0.5 - mixture
        return min(1, max(0, js))
    }
}
