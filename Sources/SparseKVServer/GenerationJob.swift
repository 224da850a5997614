import SparseKVEngine

/// One generation a backend runs: the prompt (as text for a cluster, whose coordinator
/// tokenizes, and as the ids the server counted), a token budget and sampling.
public struct GenerationJob: Sendable {
    public var promptText: String?
    public var promptTokens: [Int32]
    public var maxTokens: Int
    public var sampling: SamplingOptions
    /// Keep going past the end-of-generation token.
    public var ignoreEOS = false

    public init(promptText: String?, promptTokens: [Int32], maxTokens: Int, sampling: SamplingOptions) {
        self.promptText = promptText
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.sampling = sampling
    }
}
