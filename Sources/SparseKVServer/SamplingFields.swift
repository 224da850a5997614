import SparseKVEngine

/// The request fields chat and text completions share: how many tokens, how to sample,
/// where to stop, whether to stream. OpenAI's names; `top_k` is llama.cpp's extension.
///
/// Defaults follow OpenAI: temperature 1, top_p 1, a random seed; top_k 40 as
/// llama-server. `max_tokens` absent means up to the end of the context.
public struct SamplingFields: Decodable, Sendable, Equatable {
    public var model: String?
    public var maxTokens: Int?
    public var temperature: Float?
    public var topP: Float?
    public var topK: Int?
    public var seed: UInt64?
    public var stop: [String]
    public var stream: Bool
    public var includeUsage: Bool
    public var n: Int?

    /// Keys every completion request may carry, besides its prompt or messages.
    static let keys: Set<String> = [
        "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
        "stream_options", "n", "user", "frequency_penalty", "presence_penalty",
    ]

    private enum Key: String, CodingKey {
        case model, temperature, seed, stop, stream, n, user
        case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens", topP = "top_p", topK = "top_k"
        case streamOptions = "stream_options", frequencyPenalty = "frequency_penalty", presencePenalty = "presence_penalty"
    }

    private struct StreamOptions: Decodable {
        var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
        init(from decoder: any Decoder) throws {
            try RequestKey.rejectUnknown(in: decoder, allowed: ["include_usage"])
            includeUsage = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Bool.self, forKey: .includeUsage)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        let maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        let maxCompletion = try c.decodeIfPresent(Int.self, forKey: .maxCompletionTokens)
        self.maxTokens = maxCompletion ?? maxTokens
        if let m = self.maxTokens, m < 1 { throw APIError.invalid("max_tokens must be at least 1, not \(m)", param: "max_tokens") }
        temperature = try c.decodeIfPresent(Float.self, forKey: .temperature)
        if let t = temperature, !(0...2).contains(t) { throw APIError.invalid("temperature must be in [0, 2], not \(t)", param: "temperature") }
        topP = try c.decodeIfPresent(Float.self, forKey: .topP)
        if let p = topP, !(p > 0 && p <= 1) { throw APIError.invalid("top_p must be in (0, 1], not \(p)", param: "top_p") }
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        if let k = topK, k < 0 { throw APIError.invalid("top_k must be >= 0 (0 = off), not \(k)", param: "top_k") }
        seed = try c.decodeIfPresent(Int64.self, forKey: .seed).map { UInt64(bitPattern: $0) }
        if let one = try? c.decodeIfPresent(String.self, forKey: .stop) {
            stop = [one]
        } else {
            stop = try c.decodeIfPresent([String].self, forKey: .stop) ?? []
        }
        guard stop.count <= 4 else { throw APIError.invalid("stop takes at most 4 sequences, not \(stop.count)", param: "stop") }
        guard !stop.contains("") else { throw APIError.invalid("stop sequences must not be empty", param: "stop") }
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream) ?? false
        includeUsage = try c.decodeIfPresent(StreamOptions.self, forKey: .streamOptions)?.includeUsage ?? false
        n = try c.decodeIfPresent(Int.self, forKey: .n)
        if let n, n != 1 { throw APIError.invalid("n must be 1: the server returns one choice per request", param: "n") }
        _ = try c.decodeIfPresent(String.self, forKey: .user)
        for key in [Key.frequencyPenalty, .presencePenalty] {
            if let v = try c.decodeIfPresent(Double.self, forKey: key), v != 0 {
                throw APIError.invalid("\(key.stringValue) is not supported (only 0)", param: key.stringValue)
            }
        }
    }

    /// Sampling settings; a request without a seed gets `randomSeed`.
    public func samplingOptions(randomSeed: UInt64) -> SamplingOptions {
        SamplingOptions(temperature: temperature ?? 1, topK: topK ?? 40, topP: topP ?? 1, seed: seed ?? randomSeed)
    }
}
