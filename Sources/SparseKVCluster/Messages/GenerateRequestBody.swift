/// Client -> coordinator: generate text from a prompt. The coordinator tokenizes it,
/// runs the pipeline and answers with a generate reply carrying the same request id.
public struct GenerateRequestBody: Sendable, Equatable {
    /// Prompt text (UTF-8); tokenized by the coordinator with special tokens added.
    public var prompt: String
    /// Wrap the prompt in the model's chat template and parse special tokens.
    public var chat: Bool
    /// Most tokens to generate (0...maxContext).
    public var maxTokens: Int
    /// Sampling temperature (0 greedy), top-k (0 off), top-p in (0, 1], seed.
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    public var seed: UInt64
    /// Keep generating past the end-of-generation token.
    public var ignoreEOS: Bool
    /// Send each sampled token to the client as a generateToken message as it is sampled,
    /// before the reply.
    public var stream: Bool

    public init(prompt: String, chat: Bool = false, maxTokens: Int, temperature: Float = 0, topK: Int = 40,
                topP: Float = 0.95, seed: UInt64 = 0, ignoreEOS: Bool = false, stream: Bool = false) {
        self.stream = stream
        self.prompt = prompt
        self.chat = chat
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.ignoreEOS = ignoreEOS
    }
}
