import Foundation

/// Quality and size of one KV cache type against the fp32 cache, on the same windows.
public struct CacheEvaluation: Codable, Sendable {
    /// `--kv` spelling of the cache.
    public var cache: String
    public var windows: Int
    public var contextLength: Int
    public var tokensScored: Int
    public var perplexity: Double
    /// (ppl - ppl_fp32) / ppl_fp32
    public var relativeChange: Double
    /// Mean over scored tokens of KL(p_fp32 || p_cache), nats.
    public var meanKL: Double
    /// Fraction of scored tokens whose argmax equals the fp32 cache's.
    public var top1Agreement: Double
    /// Mean over windows of every byte the cache holds after the whole window, per token.
    public var bytesPerToken: Double
    /// docs/ARCHITECTURE.md §3: bytes * 8 / (tokens * layers * kvHeads * headDim * 2).
    public var bitsPerChannel: Double
    public var seconds: Double
}

/// Runs several KV cache types over the same windows of a text and compares each with
/// the fp32 cache (docs/ARCHITECTURE.md §3).
///
/// Protocol, the same for every cache: llama-perplexity's windows (non-overlapping, each
/// from an empty cache, tokens ctx/2 ..< ctx-1 scored). The first half of a window is the
/// prompt, prefilled in one batch; the second half is fed in batches of ``decodeBatch``
/// tokens, as a generation would (1 = token by token). Each batch attends to its own keys
/// and values as computed, earlier tokens as the cache stores them.
public struct CacheEvaluator {
    public let model: LlamaModel
    public let contextLength: Int
    public var bos: Int32?
    public var decodeBatch: Int

    public init(model: LlamaModel, contextLength: Int, bos: Int32? = nil, decodeBatch: Int = 16) {
        self.model = model
        self.contextLength = contextLength
        self.bos = bos
        self.decodeBatch = max(1, decodeBatch)
    }

    /// - Parameters:
    ///   - caches: the types to evaluate; fp32 is run as the reference whether listed or not.
    ///   - progress: (window done, windows, cache name) after each cache of each window.
    public func run(tokens: [Int32], caches: [KVCacheType], maxWindows: Int? = nil,
                    progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> [CacheEvaluation] {
        let ctx = contextLength, first = ctx / 2, vocab = model.config.vocabularySize
        let available = tokens.count / ctx
        let windows = min(available, maxWindows ?? available)
        guard windows > 0, ctx >= 4 else { throw PerplexityError.textTooShort(tokens: tokens.count, contextLength: ctx) }
        let scoredPerWindow = ctx - 1 - first
        struct Sums { var nll = 0.0, kl = 0.0, agree = 0, bytes = 0.0, seconds = 0.0 }
        var sums = [Sums](repeating: Sums(), count: caches.count)
        var refNLL = 0.0
        let c = model.config
        let channelsPerToken = Double(model.loadedLayers.count * c.kvHeadCount * c.headDim * 2)

        for w in 0..<windows {
            var window = Array(tokens[w * ctx..<(w + 1) * ctx])
            if let bos { window[0] = bos }
            // Reference: fp32 log-probabilities of every scored position, (scored, vocab).
            var reference = [Float](repeating: 0, count: scoredPerWindow * vocab)
            var referenceTop = [Int](repeating: 0, count: scoredPerWindow)
            _ = try evaluate(window, type: .fp32) { j, row in
                let lse = Kernels.logSumExp(row, count: vocab)
                let base = (j - first) * vocab
                var best = 0
                for v in 0..<vocab {
                    reference[base + v] = row[v] - lse
                    if row[v] > row[best] { best = v }
                }
                referenceTop[j - first] = best
                refNLL -= Double(reference[base + Int(window[j + 1])])
            }
            progress(w + 1, windows, "fp32")
            for (i, type) in caches.enumerated() {
                let t0 = Date()
                let bytes = try evaluate(window, type: type) { j, row in
                    let lse = Kernels.logSumExp(row, count: vocab)
                    let base = (j - first) * vocab
                    var kl = 0.0, best = 0
                    reference.withUnsafeBufferPointer { ref in
                        for v in 0..<vocab {
                            let p = ref[base + v]
                            kl += Double(exp(p)) * Double(p - (row[v] - lse))
                            if row[v] > row[best] { best = v }
                        }
                    }
                    sums[i].kl += kl
                    sums[i].nll -= Double(row[Int(window[j + 1])] - lse)
                    if best == referenceTop[j - first] { sums[i].agree += 1 }
                }
                sums[i].bytes += Double(bytes)
                sums[i].seconds += Date().timeIntervalSince(t0)
                progress(w + 1, windows, type.description)
            }
        }
        let scored = windows * scoredPerWindow
        let refPPL = exp(refNLL / Double(scored))
        return caches.enumerated().map { i, type in
            let ppl = exp(sums[i].nll / Double(scored))
            let bytesPerToken = sums[i].bytes / Double(windows) / Double(ctx)
            return CacheEvaluation(
                cache: type.description, windows: windows, contextLength: ctx, tokensScored: scored,
                perplexity: ppl, relativeChange: (ppl - refPPL) / refPPL, meanKL: sums[i].kl / Double(scored),
                top1Agreement: Double(sums[i].agree) / Double(scored), bytesPerToken: bytesPerToken,
                bitsPerChannel: bytesPerToken * 8 / channelsPerToken, seconds: sums[i].seconds)
        }
    }

    /// Feeds one window through a fresh cache of `type` with the protocol above, calling
    /// `scored(position, logits)` for positions ctx/2 ..< ctx-1. Returns the cache's bytes
    /// after the window.
    func evaluate(_ window: [Int32], type: KVCacheType,
                  scored: (Int, UnsafePointer<Float>) -> Void) throws -> Int {
        let ctx = window.count, first = ctx / 2, vocab = model.config.vocabularySize
        let cache = model.makeCache(type, capacity: ctx)
        var h = try model.embed(Array(window[0..<first]))
        try model.forward(&h, count: first, cache: cache)
        var i = first
        while i < ctx {
            let n = min(decodeBatch, ctx - i)
            h = try model.embed(Array(window[i..<i + n]))
            try model.forward(&h, count: n, cache: cache)
            let hi = min(i + n, ctx - 1)
            if i < hi {
                let logits = try model.logits(h, count: n, rows: 0..<(hi - i))
                logits.withUnsafeBufferPointer { lg in
                    for j in i..<hi { scored(j, lg.baseAddress! + (j - i) * vocab) }
                }
            }
            i += n
        }
        return cache.byteCount
    }
}
