import Foundation

/// Settings of ``LayerGrouping``: how layer distributions are compared, and how close two
/// layers must be to share a dictionary.
///
/// The CSR paper's own thresholds are not known to us. The defaults were calibrated on
/// synthetic data with the default smoothing: JS divergence (base 2, 200 x 200 bins)
/// between two layers of m = 8 Gaussian vectors, mean of 5 draws (regenerate with
/// `SPARSEKV_BENCH=1 swift test --filter LayerGroupingBenchmarks`):
///
/// | how the two layers differ              | n = 500 | n = 2,000 | n = 20,000 |
/// |----------------------------------------|---------|-----------|------------|
/// | not at all (independent samples)       | 0.014   | 0.005     | 0.001      |
/// | mean shifted 0.25 sd along one axis    | 0.011   | 0.010     | 0.006      |
/// | spread scaled by 1.2                   | 0.033   | 0.021     | 0.020      |
/// | mean shifted 0.5 sd along one axis     | 0.026   | 0.030     | 0.039      |
/// | spread scaled by 1.5                   | 0.086   | 0.088     | 0.090      |
/// | mean shifted 1 sd along one axis       | 0.125   | 0.137     | 0.153      |
///
/// So `delta1 = 0.03` sits above the sampling noise from a few hundred vectors per layer
/// up, merges layers that differ by up to about 0.4 sd of shift or (from n = 2,000) 1.2x
/// of spread, and splits layers that differ by 0.5 sd of shift (borderline at n = 2,000)
/// or 1.5x of spread. Without smoothing (`smoothing = 0`, the paper's raw histograms) the first row
/// reads 0.97 / 0.90 / 0.45 and the last 0.98 / 0.92 / 0.54: spread over 40,000 bins,
/// sampling noise swamps the differences unless there are millions of vectors per layer.
public struct LayerGroupingOptions: Sendable, Equatable {
    /// Most bins per axis: each layer's histogram takes bins^2 Doubles (8 MB at 1,024).
    public static let maxBins = 1024

    /// Largest Jensen-Shannon divergence (base 2, in [0, 1]) allowed between *any* two
    /// layers of a group. 0.03: see the table above. `.infinity` means no limit.
    public var delta1: Double
    /// Largest sum of the divergences between adjacent layers of a group. It stops a group
    /// that zigzags (each step under `delta1` but many of them) from growing without end.
    /// 0.1 = about three steps just under `delta1`. Sampling noise adds up too: the 29
    /// steps of a 30-layer model whose layers all agree sum to 0.03 at n = 20,000 (one
    /// group), 0.14 at n = 2,000 (two groups), 0.34 at n = 500 (four groups); so keep
    /// ``maxSamplesPerLayer`` high. `.infinity` means no limit.
    public var delta2: Double
    /// Histogram bins per axis of the 2-D plane (the paper: 200), 2 ... ``maxBins``.
    public var bins: Int
    /// Vectors of each layer used, at most; larger layers are subsampled without
    /// replacement with a generator seeded from ``seed``. At least 1.
    public var maxSamplesPerLayer: Int
    /// Seed of the subsampling: the same inputs and seed give the same groups.
    public var seed: UInt64
    /// Width of the Gaussian kernel each layer's histogram is smoothed with, in units of
    /// Scott's rule for 2-D data (per axis: the layers' typical within-layer spread times
    /// n^(-1/6), n the layer's sample count). 1 (default) makes the divergences nearly
    /// independent of the sample count (see the table above); the kernel narrows as n
    /// grows, so with millions of samples it approaches the paper's raw histograms.
    /// 0 = raw histograms, exactly as in the paper.
    public var smoothing: Double
    /// Most layers in one group, or nil (default) for no limit.
    public var maxGroupSize: Int?

    /// - Parameters:
    ///   - delta1: largest JS divergence between any two layers of a group (>= 0).
    ///   - delta2: largest sum of JS divergences of adjacent layers in a group (>= 0).
    ///   - bins: histogram bins per axis (2 ... ``maxBins``).
    ///   - maxSamplesPerLayer: vectors used per layer, at most (>= 1).
    ///   - seed: seed of the subsampling.
    ///   - smoothing: kernel width in units of Scott's rule (>= 0; 0 = raw histograms).
    ///   - maxGroupSize: most layers per group (>= 1), nil for no limit.
    public init(delta1: Double = 0.03, delta2: Double = 0.1, bins: Int = 200, maxSamplesPerLayer: Int = 20_000,
                seed: UInt64 = 1, smoothing: Double = 1, maxGroupSize: Int? = nil) {
        self.delta1 = delta1
        self.delta2 = delta2
        self.bins = bins
        self.maxSamplesPerLayer = maxSamplesPerLayer
        self.seed = seed
        self.smoothing = smoothing
        self.maxGroupSize = maxGroupSize
    }

    /// Throws the first option that is out of range.
    func validate() throws {
        guard bins >= 2, bins <= Self.maxBins else { throw LayerGroupingError.badBins(bins) }
        try validateThresholds()
        guard maxSamplesPerLayer >= 1 else { throw LayerGroupingError.badMaxSamplesPerLayer(maxSamplesPerLayer) }
        guard smoothing.isFinite, smoothing >= 0 else { throw LayerGroupingError.badSmoothing(smoothing) }
    }

    /// Throws when a threshold or the group size is out of range (all that grouping a
    /// given divergence matrix needs).
    func validateThresholds() throws {
        for (name, value) in [("delta1", delta1), ("delta2", delta2)] where !(value >= 0) {
            throw LayerGroupingError.badThreshold(name: name, value: value)
        }
        if let size = maxGroupSize, size < 1 { throw LayerGroupingError.badMaxGroupSize(size) }
    }
}
