/// Weights of one transformer block. Matrices are (out, in) row-major.
public struct LlamaLayer: Sendable {
    /// (dim)
    public let attentionNorm: [Float]
    /// (heads * headDim, dim)
    public let wq: WeightMatrix
    /// (kvHeads * headDim, dim)
    public let wk: WeightMatrix
    /// (kvHeads * headDim, dim)
    public let wv: WeightMatrix
    /// (dim, heads * headDim)
    public let wo: WeightMatrix
    /// (dim)
    public let ffnNorm: [Float]
    /// (ffn, dim)
    public let wGate: WeightMatrix
    /// (ffn, dim)
    public let wUp: WeightMatrix
    /// (dim, ffn)
    public let wDown: WeightMatrix

    /// Loads block `index` (tensors `blk.<index>.*`), checking every shape.
    public init(gguf: GGUFFile, index: Int, config c: LlamaConfig) throws {
        let p = "blk.\(index)."
        let q = c.headCount * c.headDim
        attentionNorm = try gguf.floats(p + "attn_norm.weight", shape: [c.embeddingLength])
        wq = try WeightMatrix(gguf: gguf, name: p + "attn_q.weight", rows: q, cols: c.embeddingLength)
        wk = try WeightMatrix(gguf: gguf, name: p + "attn_k.weight", rows: c.kvDim, cols: c.embeddingLength)
        wv = try WeightMatrix(gguf: gguf, name: p + "attn_v.weight", rows: c.kvDim, cols: c.embeddingLength)
        wo = try WeightMatrix(gguf: gguf, name: p + "attn_output.weight", rows: c.embeddingLength, cols: q)
        ffnNorm = try gguf.floats(p + "ffn_norm.weight", shape: [c.embeddingLength])
        wGate = try WeightMatrix(gguf: gguf, name: p + "ffn_gate.weight", rows: c.feedForwardLength, cols: c.embeddingLength)
        wUp = try WeightMatrix(gguf: gguf, name: p + "ffn_up.weight", rows: c.feedForwardLength, cols: c.embeddingLength)
        wDown = try WeightMatrix(gguf: gguf, name: p + "ffn_down.weight", rows: c.embeddingLength, cols: c.feedForwardLength)
    }

    public var byteCount: Int {
        (attentionNorm.count + ffnNorm.count) * 4
            + [wq, wk, wv, wo, wGate, wUp, wDown].reduce(0) { $0 + $1.byteCount }
    }
}
