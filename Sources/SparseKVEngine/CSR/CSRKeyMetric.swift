import Foundation

/// The query-aware metric keys are coded in (`dict train --key-metric query`).
///
/// What attention reads of a key k is the score q·R(k), with R the key's RoPE rotation. For
/// a coding error e, (q·R(e))² averaged over rotation angles (independent per RoPE
/// frequency pair) is ½ Σ_i |q_i|² |e_i|², i the channel pairs (2i, 2i+1) that
/// ``RoPE`` rotates together; averaged over queries it is ½ Σ_i w_i |e_i|² with
/// w_i = E|q_i|². So the error that matters is the key error in a diagonal metric that is
/// constant inside each rotation pair, measured per (layer, KV head) over the query heads
/// that share the KV head.
///
/// A dictionary with a metric is trained on, and codes, k' = sqrt(w) ⊙ k. Because w is
/// constant inside each pair, scaling commutes with the rotation: q·R(k) =
/// (q ⊙ w^{-1/2})·R(k'), so attention scales the query once instead of touching the codes,
/// and everything a CSR cache stores for keys (codes, online atoms, guard rows, the latest
/// append) lives in the scaled space.
public struct CSRKeyMetric: Sendable, Equatable {
    public let layerCount: Int
    public let kvHeads: Int
    public let headDim: Int
    /// (layerCount, kvHeads, headDim / 2) the weight of each RoPE pair, mean 1 per (layer, KV head).
    public let pairWeights: [Float]
    /// How the query energies were measured (text, tokens), for `dict info`.
    public let source: String

    /// A pair weight is at least this fraction of its (layer, head)'s mean, so that the
    /// inverse scale applied to queries stays bounded.
    public static let weightFloor: Double = 1e-3

    /// - Throws: `CSRError.badSettings` when the sizes disagree or a weight is not a
    ///   positive finite number.
    public init(layerCount: Int, kvHeads: Int, headDim: Int, pairWeights: [Float], source: String) throws {
        guard layerCount > 0, kvHeads > 0, headDim > 0, headDim % 2 == 0 else {
            throw CSRError.badSettings("key metric: bad shape \(layerCount) layers, \(kvHeads) KV heads of \(headDim)")
        }
        guard pairWeights.count == layerCount * kvHeads * headDim / 2 else {
            throw CSRError.badSettings("key metric: \(pairWeights.count) pair weights for \(layerCount) layers, \(kvHeads) KV heads of \(headDim)")
        }
        guard pairWeights.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw CSRError.badSettings("key metric: every pair weight must be a positive finite number")
        }
        self.layerCount = layerCount
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.pairWeights = pairWeights
        self.source = source
    }

    /// The metric of measured query energies: each (layer, KV head)'s mean pair energies
    /// divided by their mean (so the metric keeps the keys' overall scale), floored at
    /// ``weightFloor``.
    ///
    /// - Throws: `CSRError.badSettings` when no query was measured for some (layer, head).
    public init(energy: QueryPairEnergy, source: String) throws {
        let pairs = energy.headDim / 2
        var w = [Float](repeating: 0, count: energy.layerCount * energy.kvHeads * pairs)
        for l in 0..<energy.layerCount {
            for h in 0..<energy.kvHeads {
                let e = energy.meanEnergy(layer: l, kvHead: h)
                let mean = e.reduce(0, +) / Double(pairs)
                guard mean > 0, mean.isFinite else {
                    throw CSRError.badSettings("key metric: no query energy measured for layer \(l), KV head \(h)")
                }
                for i in 0..<pairs { w[(l * energy.kvHeads + h) * pairs + i] = Float(max(e[i] / mean, Self.weightFloor)) }
            }
        }
        try self.init(layerCount: energy.layerCount, kvHeads: energy.kvHeads, headDim: energy.headDim,
                      pairWeights: w, source: source)
    }

    /// sqrt(w) for every channel of one layer's key row, (kvHeads * headDim): channels 2i
    /// and 2i + 1 of a head share pair i's weight. With `inverse`, w^{-1/2}.
    public func channelScales(layer: Int, inverse: Bool = false) -> [Float] {
        let pairs = headDim / 2
        var out = [Float](repeating: 1, count: kvHeads * headDim)
        for h in 0..<kvHeads {
            for i in 0..<pairs {
                let r = pairWeights[(layer * kvHeads + h) * pairs + i].squareRoot()
                out[h * headDim + 2 * i] = inverse ? 1 / r : r
                out[h * headDim + 2 * i + 1] = inverse ? 1 / r : r
            }
        }
        return out
    }

    /// ½ Σ_i w_i |e_i|² for an error `e` (headDim) of `layer`'s KV head `kvHead`: with
    /// unnormalised weights (mean query pair energies) this is the mean over queries and
    /// rotation angles of (q·R(e))².
    public static func weightedError(_ e: [Float], pairWeights w: ArraySlice<Float>) -> Double {
        var s = 0.0
        for (i, wi) in w.enumerated() {
            s += Double(wi) * (Double(e[2 * i]) * Double(e[2 * i]) + Double(e[2 * i + 1]) * Double(e[2 * i + 1]))
        }
        return s / 2
    }

    /// Pre-RoPE keys of `layer`, (tokens, kvHeads * headDim), as the dictionary codes them:
    /// sqrt(w) ⊙ k.
    public func scaledKeys(_ keys: [Float], layer: Int) -> [Float] {
        var out = keys
        out.withUnsafeMutableBufferPointer {
            Self.scaleRows($0.baseAddress!, rows: keys.count / (kvHeads * headDim), by: channelScales(layer: layer))
        }
        return out
    }

    /// Multiplies rows of (kvHeads * headDim) floats in place by one layer's channel scales.
    static func scaleRows(_ x: UnsafeMutablePointer<Float>, rows: Int, by scales: [Float]) {
        let w = scales.count
        for r in 0..<rows {
            let row = x + r * w
            for i in 0..<w { row[i] *= scales[i] }
        }
    }
}
