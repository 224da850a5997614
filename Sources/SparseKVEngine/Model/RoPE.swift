import Foundation

/// Rotary position embedding as llama.cpp applies it to llama-architecture GGUF models
/// ("normal" mode): channel pairs (2i, 2i+1) of each head are rotated by
/// pos * base^(-2i / ropeDimension). The GGUF converter permuted the Q/K weights so that
/// this adjacent-pair form equals the original model's half-split form.
public struct RoPE: Sendable {
    public let headDim: Int
    public let ropeDimension: Int
    /// (ropeDimension / 2) inverse frequencies
    let invFreq: [Float]

    public init(headDim: Int, ropeDimension: Int, base: Float) {
        self.headDim = headDim
        self.ropeDimension = ropeDimension
        invFreq = (0..<ropeDimension / 2).map { i in
            Float(pow(Double(base), -2 * Double(i) / Double(ropeDimension)))
        }
    }

    public init(config: LlamaConfig) {
        self.init(headDim: config.headDim, ropeDimension: config.ropeDimension, base: config.ropeFreqBase)
    }

    /// Rotates `heads` consecutive head vectors at `x` for one position, in place.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let p = Double(position)
        for i in 0..<ropeDimension / 2 {
            // Angles in Double: positions reach thousands and Float loses the phase.
            let theta = p * Double(invFreq[i])
            let c = Float(cos(theta)), s = Float(sin(theta))
            for h in 0..<heads {
                let v = x + h * headDim + 2 * i
                let a = v[0], b = v[1]
                v[0] = a * c - b * s
                v[1] = a * s + b * c
            }
        }
    }

    /// Rotates `count` rows of `heads` head vectors each, row r at position start + r.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows count: Int, heads: Int, startPosition: Int) {
        for r in 0..<count {
            apply(x + r * heads * headDim, heads: heads, position: startPosition + r)
        }
    }
}
