import Foundation

// Steps 3 and 4 of layer grouping: one 2-D histogram per layer over a common range,
// smoothed and normalized, then the Jensen-Shannon divergence of every pair.

extension LayerGrouping {
    // MARK: - Common range

    /// Share of the pooled points left outside the histogram range on each side of each
    /// axis. min ... max would let a handful of outliers (KV caches have them: attention
    /// sinks, massive activations) stretch the range until the bulk of every layer falls
    /// into a few bins and all layers look alike. Points outside the range are counted in
    /// the edge bins, so a layer with heavier tails still differs there.
    static let rangeTail = 0.005

    /// Per axis, the 0.5th ... 99.5th percentile of all layers' points pooled. A range of
    /// zero width (most points equal) widens to min ... max, and failing that to the
    /// value +- 0.5.
    ///
    /// - Parameter points: per layer, (n_l, 2) row-major.
    static func commonRange(points: [[Double]]) -> [ClosedRange<Double>] {
        (0..<2).map { axis in
            let pooled = points.flatMap { layer in stride(from: axis, to: layer.count, by: 2).map { layer[$0] } }.sorted()
            guard let first = pooled.first, let last = pooled.last else { return -0.5...0.5 }
            let lo = percentile(sorted: pooled, rangeTail), hi = percentile(sorted: pooled, 1 - rangeTail)
            if hi > lo { return lo...hi }
            if last > first { return first...last }
            return (first - 0.5)...(first + 0.5)
        }
    }

    /// The q-quantile (0 ... 1) of non-empty sorted values, interpolating linearly between
    /// neighbouring order statistics.
    static func percentile(sorted values: [Double], _ q: Double) -> Double {
        let position = q * Double(values.count - 1)
        let below = Int(position.rounded(.down))
        let above = min(below + 1, values.count - 1)
        let w = position - Double(below)
        return values[below] * (1 - w) + values[above] * w
    }

    /// A robust spread of non-empty values: min(standard deviation, IQR / 1.349)
    /// (Silverman's), so that a few outliers do not widen the smoothing kernel; whichever
    /// is nonzero when the other is 0.
    static func spread(of values: [Double]) -> Double {
        let mean = values.reduce(0, +) / Double(values.count)
        let sd = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)).squareRoot()
        let sorted = values.sorted()
        let iqr = (percentile(sorted: sorted, 0.75) - percentile(sorted: sorted, 0.25)) / 1.349
        return sd > 0 && iqr > 0 ? min(sd, iqr) : max(sd, iqr)
    }

    // MARK: - Histograms

    /// One normalized `bins x bins` histogram per layer over ``commonRange(points:)``,
    /// smoothed with a Gaussian kernel unless `smoothing` is 0.
    ///
    /// The kernel's standard deviation along each axis is `smoothing` x s x n_l^(-1/6)
    /// (Scott's rule in 2-D), s being the root mean square over layers of each layer's
    /// ``spread(of:)`` along that axis. Using the layers' typical *within*-layer spread,
    /// not the pooled one, keeps layers that sit apart from each other from blurring
    /// together; using one s for all layers smooths layers of equal count identically.
    ///
    /// - Parameter points: per layer, (n_l, 2) row-major, n_l >= 1.
    /// - Returns: per layer, (bins, bins) row-major (row = first axis), summing to 1.
    static func smoothedHistograms(points: [[Double]], bins: Int, smoothing: Double) -> [[Double]] {
        let range = commonRange(points: points)
        var typicalSpread = [0.0, 0.0]  // (2)
        if smoothing > 0 {
            for axis in 0..<2 {
                let squares = points.map { layer in
                    let s = spread(of: stride(from: axis, to: layer.count, by: 2).map { layer[$0] })
                    return s * s
                }
                typicalSpread[axis] = (squares.reduce(0, +) / Double(max(1, squares.count))).squareRoot()
            }
        }
        let binsPerUnit = range.map { Double(bins) / ($0.upperBound - $0.lowerBound) }
        return points.map { layer in
            var h = [Double](repeating: 0, count: bins * bins)  // (bins, bins)
            for k in 0..<(layer.count / 2) {
                let i = binIndex(layer[2 * k], range[0].lowerBound, binsPerUnit[0], bins)
                let j = binIndex(layer[2 * k + 1], range[1].lowerBound, binsPerUnit[1], bins)
                h[i * bins + j] += 1
            }
            if smoothing > 0 {
                let scott = pow(Double(max(1, layer.count / 2)), -1.0 / 6)
                let sigma = (0..<2).map { smoothing * typicalSpread[$0] * scott * binsPerUnit[$0] }
                blur(&h, bins: bins, sigma: sigma)
            }
            let total = h.reduce(0, +)
            return total > 0 ? h.map { $0 / total } : h
        }
    }

    /// The bin of `x` on an axis starting at `lower`; values outside the range land in the
    /// edge bins. Clamped in Double first, so that huge values (or a NaN from a range too
    /// narrow for Double) cannot trap in the conversion.
    private static func binIndex(_ x: Double, _ lower: Double, _ binsPerUnit: Double, _ bins: Int) -> Int {
        let t = (x - lower) * binsPerUnit
        guard t > 0 else { return 0 }
        return t < Double(bins - 1) ? Int(t) : bins - 1
    }

    /// Kernels narrower than this (in bins) leave a histogram as it is.
    private static let minimumSigma = 0.05

    /// Convolves a (bins, bins) histogram with a separable Gaussian of standard deviation
    /// sigma[axis] bins, truncated at 3 sigma. Mass blurred past the edges is dropped; the
    /// caller normalizes afterwards.
    static func blur(_ h: inout [Double], bins: Int, sigma: [Double]) {
        var out = [Double](repeating: 0, count: bins * bins)  // (bins, bins)
        for axis in 0..<2 where sigma[axis] >= minimumSigma {
            let radius = Int(min(3 * sigma[axis], Double(bins - 1)).rounded(.up))
            let weights = (-radius...radius).map { exp(-Double($0 * $0) / (2 * sigma[axis] * sigma[axis])) }
            for i in out.indices { out[i] = 0 }
            h.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for (w, d) in zip(weights, -radius...radius) {
                        // out[i, j] += w * h[i + d, j] (axis 0) or w * h[i, j + d] (axis 1),
                        // over the rows or columns where both are inside the grid.
                        let lo = max(0, -d), hi = min(bins, bins - d)
                        guard lo < hi else { continue }
                        if axis == 0 {
                            for i in lo..<hi {
                                let o = i * bins, s = (i + d) * bins
                                for j in 0..<bins { dst[o + j] += w * src[s + j] }
                            }
                        } else {
                            for i in 0..<bins {
                                let o = i * bins
                                for j in lo..<hi { dst[o + j] += w * src[o + j + d] }
                            }
                        }
                    }
                }
            }
            swap(&h, &out)
        }
    }

    // MARK: - Divergences

    /// (L, L) row-major Jensen-Shannon divergences between normalized histograms:
    /// symmetric, exactly 0 on the diagonal.
    static func divergenceMatrix(_ histograms: [[Double]]) -> [Double] {
        let n = histograms.count
        var d = [Double](repeating: 0, count: n * n)  // (L, L)
        let entropies = histograms.map { h in h.withUnsafeBufferPointer { negativeEntropy($0) } }
        for i in 0..<n {
            for j in (i + 1)..<n {
                let js = histograms[i].withUnsafeBufferPointer { p in
                    histograms[j].withUnsafeBufferPointer { q in
                        jensenShannon(p, q, negativeEntropies: (entropies[i], entropies[j]))
                    }
                }
                d[i * n + j] = js
                d[j * n + i] = js
            }
        }
        return d
    }
}
