/// Hyperparameters of a llama-architecture model, read from GGUF metadata.
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var vocabularySize: Int
    /// Width of the residual stream (d_model).
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    /// Channels of each head that RoPE rotates (the rest pass through).
    public var ropeDimension: Int
    public var ropeFreqBase: Float
    public var rmsEpsilon: Float
    public var contextLength: Int
    /// Output head shares the token embedding matrix.
    public var tiedEmbeddings: Bool

    public var kvDim: Int { kvHeadCount * headDim }
    /// Query heads per KV head (grouped-query attention).
    public var groupSize: Int { headCount / kvHeadCount }

    public init(
        vocabularySize: Int, embeddingLength: Int, feedForwardLength: Int, layerCount: Int,
        headCount: Int, kvHeadCount: Int, ropeDimension: Int? = nil, ropeFreqBase: Float = 10000,
        rmsEpsilon: Float = 1e-5, contextLength: Int = 2048, tiedEmbeddings: Bool = true
    ) {
        self.vocabularySize = vocabularySize
        self.embeddingLength = embeddingLength
        self.feedForwardLength = feedForwardLength
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = embeddingLength / max(headCount, 1)
        self.ropeDimension = ropeDimension ?? embeddingLength / max(headCount, 1)
        self.ropeFreqBase = ropeFreqBase
        self.rmsEpsilon = rmsEpsilon
        self.contextLength = contextLength
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// Reads the `llama.*` keys; checks that the numbers fit together.
    public init(gguf: GGUFFile) throws {
        let arch = try gguf.string("general.architecture")
        guard arch == "llama" else { throw ModelError.unsupportedArchitecture(path: gguf.path, architecture: arch) }
        let embd = try gguf.requireTensor("token_embd.weight")
        let dim = try gguf.int("llama.embedding_length")
        let heads = try gguf.int("llama.attention.head_count")
        let kvHeads = (try? gguf.int("llama.attention.head_count_kv")) ?? heads
        self.init(
            vocabularySize: (try? gguf.int("llama.vocab_size")) ?? embd.shape.last ?? 0,
            embeddingLength: dim,
            feedForwardLength: try gguf.int("llama.feed_forward_length"),
            layerCount: try gguf.int("llama.block_count"),
            headCount: heads,
            kvHeadCount: kvHeads,
            ropeDimension: try? gguf.int("llama.rope.dimension_count"),
            ropeFreqBase: (try? gguf.float("llama.rope.freq_base")) ?? 10000,
            rmsEpsilon: (try? gguf.float("llama.attention.layer_norm_rms_epsilon")) ?? 1e-5,
            contextLength: (try? gguf.int("llama.context_length")) ?? 2048,
            tiedEmbeddings: gguf.tensorInfo("output.weight") == nil)
        try validate(path: gguf.path)
    }

    func validate(path: String) throws {
        func bad(_ name: String, _ value: Any) -> ModelError {
            .badHyperparameter(path: path, name: name, value: "\(value)")
        }
        guard embeddingLength > 0, embeddingLength <= 65536 else { throw bad("embedding_length", embeddingLength) }
        guard headCount > 0, embeddingLength % headCount == 0 else { throw bad("head_count", headCount) }
        guard kvHeadCount > 0, headCount % kvHeadCount == 0 else { throw bad("head_count_kv", kvHeadCount) }
        guard layerCount > 0, layerCount <= 1024 else { throw bad("block_count", layerCount) }
        guard feedForwardLength > 0 else { throw bad("feed_forward_length", feedForwardLength) }
        guard vocabularySize > 0 else { throw bad("vocab_size", vocabularySize) }
        guard ropeDimension > 0, ropeDimension <= headDim, ropeDimension % 2 == 0 else { throw bad("rope.dimension_count", ropeDimension) }
        guard ropeFreqBase > 0, rmsEpsilon > 0 else { throw bad("rope.freq_base/rms_epsilon", "\(ropeFreqBase)/\(rmsEpsilon)") }
        guard contextLength > 0 else { throw bad("context_length", contextLength) }
    }
}
