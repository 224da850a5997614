import Foundation

/// Result of one generation, with timings. Also the `--json` output of `generate`.
public struct GenerationResult: Codable, Sendable {
    public var promptTokens: [Int32]
    public var generatedTokens: [Int32]
    public var text: String
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    public var prefillTokensPerSecond: Double
    public var decodeTokensPerSecond: Double
    /// "length" (token limit), "eos" (end-of-generation token) or "context" (context full)
    public var stopReason: String
    public var kvCache: String
    public var kvCacheBytes: Int
}

/// Single-process generation on token ids: batched prefill, then one token per step.
public struct TextGenerator {
    public let model: LlamaModel
    public let cacheType: KVCacheType
    /// Tokens per prefill batch; bounds the attention scratch memory.
    public var prefillBatch = 512
    public var contextLength: Int

    public init(model: LlamaModel, cacheType: KVCacheType = .fp32, contextLength: Int? = nil) {
        self.model = model
        self.cacheType = cacheType
        self.contextLength = min(contextLength ?? model.config.contextLength, model.config.contextLength)
    }

    /// Feeds `tokens` through the whole model into `cache`; returns logits of the last one.
    public func prefill(_ tokens: [Int32], cache: any KVCache) throws -> [Float] {
        var last: [Float] = []
        var i = 0
        while i < tokens.count {
            let chunk = Array(tokens[i..<min(i + prefillBatch, tokens.count)])
            var h = try model.embed(chunk)
            try model.forward(&h, count: chunk.count, cache: cache)
            if i + chunk.count == tokens.count {
                last = try model.logits(h, count: chunk.count, rows: chunk.count - 1..<chunk.count)
            }
            i += chunk.count
        }
        return last
    }

    /// Logits after one more token.
    public func step(_ token: Int32, cache: any KVCache) throws -> [Float] {
        var h = try model.embed([token])
        try model.forward(&h, count: 1, cache: cache)
        return try model.logits(h, count: 1)
    }

    /// Generates up to `maxTokens` after `prompt`. `isStop` ends generation early on a
    /// token (it is not emitted); `onToken` sees each generated token as it comes.
    public func generate(
        prompt: [Int32], maxTokens: Int, sampling: SamplingOptions,
        isStop: (Int32) -> Bool = { _ in false }, onToken: (Int32) -> Void = { _ in }
    ) throws -> GenerationResult {
        precondition(!prompt.isEmpty, "prompt must hold at least one token")
        guard prompt.count + maxTokens <= contextLength || prompt.count < contextLength else {
            throw ModelError.contextFull(needed: prompt.count, contextLength: contextLength)
        }
        let cache = model.makeCache(cacheType, capacity: contextLength)
        var sampler = Sampler(sampling)
        let t0 = DispatchTime.now()
        var logits = try prefill(prompt, cache: cache)
        let t1 = DispatchTime.now()
        var out: [Int32] = []
        var reason = "length"
        while out.count < maxTokens {
            let next = sampler.sample(logits)
            if isStop(next) { reason = "eos"; break }
            out.append(next)
            onToken(next)
            if out.count == maxTokens { break }
            if cache.tokenCount >= contextLength { reason = "context"; break }
            logits = try step(next, cache: cache)
        }
        let t2 = DispatchTime.now()
        let prefillS = Double(t1.uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
        let decodeS = Double(t2.uptimeNanoseconds - t1.uptimeNanoseconds) / 1e9
        // The first generated token comes from the prefill's logits; decode steps = out.count - 1.
        let steps = max(out.count - 1, 0)
        return GenerationResult(
            promptTokens: prompt, generatedTokens: out, text: "",
            prefillSeconds: prefillS, decodeSeconds: decodeS,
            prefillTokensPerSecond: Double(prompt.count) / max(prefillS, 1e-9),
            decodeTokensPerSecond: steps > 0 ? Double(steps) / max(decodeS, 1e-9) : 0,
            stopReason: reason, kvCache: cache.kind, kvCacheBytes: cache.byteCount)
    }
}
