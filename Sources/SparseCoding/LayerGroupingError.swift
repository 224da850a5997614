import Foundation

/// Why layer grouping (or one of its helpers) failed. Every case carries the layer or value
/// that was wrong, so the message tells the caller what to change.
public enum LayerGroupingError: LocalizedError, Sendable, Equatable {
    // MARK: - Samples
    case noLayers
    case dimensionTooSmall(dimension: Int)
    case emptyLayer(layer: Int)
    case badLayerShape(layer: Int, elements: Int, dimension: Int)
    case nonFiniteValue(layer: Int, vector: Int, component: Int)

    // MARK: - Options
    case badBins(Int)
    case badThreshold(name: String, value: Double)
    case badMaxSamplesPerLayer(Int)
    case badMaxGroupSize(Int)
    case badSmoothing(Double)

    // MARK: - Helpers
    case badDivergenceShape(layerCount: Int, elements: Int)
    case distributionLengthMismatch(first: Int, second: Int)
    case badProbability(index: Int, value: Double)
    case emptyDistribution

    public var errorDescription: String? {
        switch self {
        case .noLayers:
            return "layer grouping needs the samples of at least one layer, got none."
        case .dimensionTooSmall(let m):
            return "layer grouping projects vectors onto a 2-D plane, so they need dimension m >= 2, got \(m)."
        case .emptyLayer(let l):
            return "layer \(l) has no sample vectors. Collect samples for every layer before grouping."
        case .badLayerShape(let l, let e, let m):
            return "layer \(l) holds \(e) values, not a whole number of vectors of dimension \(m). "
                + "Samples are stored (count, m) row-major."
        case .nonFiniteValue(let l, let v, let c):
            return "layer \(l), vector \(v), component \(c) is NaN or infinite. Check how the samples were collected."
        case .badBins(let b):
            return "histograms need 2 ... \(LayerGroupingOptions.maxBins) bins per axis, got \(b)."
        case .badThreshold(let name, let v):
            return "\(name) must be a number >= 0 (Jensen-Shannon divergence lies in [0, 1]; "
                + "infinity means no limit), got \(v)."
        case .badMaxSamplesPerLayer(let n):
            return "maxSamplesPerLayer must be at least 1, got \(n)."
        case .badMaxGroupSize(let n):
            return "maxGroupSize must be at least 1 (or nil for no limit), got \(n)."
        case .badSmoothing(let s):
            return "smoothing must be a finite number >= 0 (0 = raw histograms, 1 = Scott's rule), got \(s)."
        case .badDivergenceShape(let l, let e):
            return "a divergence matrix for \(l) layers needs \(l) x \(l) values, got \(e)."
        case .distributionLengthMismatch(let a, let b):
            return "distributions over \(a) and \(b) bins cannot be compared; both need the same bins."
        case .badProbability(let i, let v):
            return "bin \(i) holds \(v); a distribution needs finite values >= 0."
        case .emptyDistribution:
            return "a distribution sums to 0 (or is empty) and cannot be normalized."
        }
    }
}
