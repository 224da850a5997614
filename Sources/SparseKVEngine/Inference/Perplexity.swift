import Foundation

/// Result of a perplexity run (llama-perplexity's protocol).
public struct PerplexityResult: Codable, Sendable {
    public var perplexity: Double
    public var tokensScored: Int
    public var chunks: Int
    public var contextLength: Int
    /// Mean negative log-likelihood of each chunk's scored tokens.
    public var chunkNLL: [Double]
    public var kvCache: String
    public var seconds: Double
}

/// llama-perplexity's protocol (docs/ARCHITECTURE.md §3): the whole text tokenized without BOS,
/// cut into non-overlapping windows of `contextLength` tokens, each evaluated from an
/// empty cache; in each window the logits at positions ctx/2 ..< ctx-1 are scored
/// against the next token (ctx/2 - 1 tokens per window).
public struct PerplexityEvaluator {
    public let model: LlamaModel
    public let cacheType: KVCacheType
    public let contextLength: Int
    /// Token put at the start of every window (the BOS id) when the model adds one.
    public var bos: Int32?
    public var batch = 512

    public init(model: LlamaModel, cacheType: KVCacheType, contextLength: Int, bos: Int32? = nil) {
        self.model = model
        self.cacheType = cacheType
        self.contextLength = contextLength
        self.bos = bos
    }

    /// Scores up to `maxChunks` windows (all when nil). `progress(done, total, runningPPL)`
    /// is called after each window.
    public func run(tokens: [Int32], maxChunks: Int? = nil,
                    progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> PerplexityResult {
        let ctx = contextLength
        let available = tokens.count / ctx
        let chunks = min(available, maxChunks ?? available)
        guard chunks > 0 else {
            throw PerplexityError.textTooShort(tokens: tokens.count, contextLength: ctx)
        }
        let first = ctx / 2
        let vocab = model.config.vocabularySize
        var nllSum = 0.0
        var scored = 0
        var chunkNLL: [Double] = []
        let t0 = Date()
        for c in 0..<chunks {
            var window = Array(tokens[c * ctx..<(c + 1) * ctx])
            if let bos { window[0] = bos }
            let cache = model.makeCache(cacheType, capacity: ctx)
            var chunkSum = 0.0
            var i = 0
            while i < ctx {
                let n = min(batch, ctx - i)
                var h = try model.embed(Array(window[i..<i + n]))
                try model.forward(&h, count: n, cache: cache)
                // Rows of this batch whose position is in [first, ctx - 2].
                let lo = max(first, i), hi = min(ctx - 1, i + n)
                if lo < hi {
                    let logits = try model.logits(h, count: n, rows: (lo - i)..<(hi - i))
                    logits.withUnsafeBufferPointer { lg in
                        for j in lo..<hi {
                            let row = lg.baseAddress! + (j - lo) * vocab
                            let target = Int(window[j + 1])
                            chunkSum += Double(Kernels.logSumExp(row, count: vocab) - row[target])
                        }
                    }
                }
                i += n
            }
            let count = ctx - 1 - first
            nllSum += chunkSum
            scored += count
            chunkNLL.append(chunkSum / Double(count))
            progress(c + 1, chunks, exp(nllSum / Double(scored)))
        }
        return PerplexityResult(
            perplexity: exp(nllSum / Double(scored)), tokensScored: scored, chunks: chunks, contextLength: ctx,
            chunkNLL: chunkNLL, kvCache: cacheType.description, seconds: Date().timeIntervalSince(t0))
    }
}

public enum PerplexityError: LocalizedError, Sendable {
    case textTooShort(tokens: Int, contextLength: Int)

    public var errorDescription: String? {
        switch self {
        case .textTooShort(let t, let c):
            return "the text has \(t) tokens, fewer than one window of \(c); use a smaller --ctx or a longer text."
        }
    }
}
