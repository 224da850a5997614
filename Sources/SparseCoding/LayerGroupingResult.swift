import Foundation

/// Which adjacent layers share a dictionary, and the divergences the choice was made from.
public struct LayerGroupingResult: Sendable, Equatable {
    /// Groups of adjacent layers, in order: contiguous, non-empty, covering 0 ..< L.
    public let groups: [Range<Int>]
    /// (L, L) row-major Jensen-Shannon divergences (base 2, in [0, 1]) between the
    /// layers' smoothed 2-D histograms; symmetric, zero on the diagonal.
    public let divergence: [Double]
    /// L, the number of layers.
    public let layerCount: Int
    /// (L) vectors of each layer that were used (after subsampling).
    public let sampleCounts: [Int]
    /// Fraction of the pooled samples' variance that lies in the 2-D PCA plane the
    /// histograms are drawn in (0 ... 1). Low values mean the layers are compared on a
    /// small part of what distinguishes them.
    public let explainedVariance: Double

    /// The index in ``groups`` of the group holding layer `l`, or nil when `l` is not in
    /// 0 ..< ``layerCount``.
    public func group(ofLayer l: Int) -> Int? {
        groups.firstIndex { $0.contains(l) }
    }

    /// JS divergence between layers `i` and `j`, both in 0 ..< ``layerCount`` (as for an
    /// array subscript).
    public func js(_ i: Int, _ j: Int) -> Double {
        divergence[i * layerCount + j]
    }
}
