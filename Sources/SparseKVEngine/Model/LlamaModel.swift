import CBLAS
import Foundation

/// A llama-architecture decoder, or a contiguous slice of one.
///
/// A model instance holds the blocks of `loadedLayers` and, optionally, the token
/// embeddings and the output norm + LM head. The coordinator of a cluster loads only
/// the latter, each worker only its layers; a single-process run loads everything.
/// Compute is pure: hidden states and a KV cache in, hidden states out.
public final class LlamaModel: Sendable {
    public let config: LlamaConfig
    public let loadedLayers: Range<Int>
    public let rope: RoPE
    /// `general.name` of the GGUF (its file name when absent).
    public let name: String
    /// ``ModelFingerprint`` of the GGUF: what CSR dictionaries are checked against.
    public let fingerprint: String
    /// Blocks of loadedLayers, in order.
    let layers: [LlamaLayer]
    /// Floats of the largest dequantized tile a block's batched products need.
    let maxTileFloats: Int
    /// (vocab, dim); also the LM head when embeddings are tied
    let tokenEmbedding: WeightMatrix?
    /// (dim)
    let outputNorm: [Float]?
    /// (vocab, dim) when the model has its own output.weight
    let untiedHead: WeightMatrix?

    /// Loads the blocks in `layers` (all when nil), and the embeddings and head if asked.
    /// Tensors outside the selection are never read.
    public init(gguf: GGUFFile, layers range: Range<Int>? = nil, embeddings: Bool = true, head: Bool = true) throws {
        let c = try LlamaConfig(gguf: gguf)
        let range = range ?? 0..<c.layerCount
        guard range.lowerBound >= 0, range.upperBound <= c.layerCount else {
            throw ModelError.layerRangeOutOfBounds(requested: range, layerCount: c.layerCount)
        }
        config = c
        loadedLayers = range
        rope = RoPE(config: c)
        name = (try? gguf.string("general.name")) ?? URL(fileURLWithPath: gguf.path).lastPathComponent
        fingerprint = ModelFingerprint.compute(gguf)
        layers = try range.map { try LlamaLayer(gguf: gguf, index: $0, config: c) }
        maxTileFloats = layers.flatMap { [$0.wq, $0.wk, $0.wv, $0.wo, $0.wGate, $0.wUp, $0.wDown] }.map(\.tileFloats).max() ?? 0
        let needEmbedding = embeddings || (head && c.tiedEmbeddings)
        tokenEmbedding = needEmbedding
            ? try WeightMatrix(gguf: gguf, name: "token_embd.weight", rows: c.vocabularySize, cols: c.embeddingLength)
            : nil
        outputNorm = head ? try gguf.floats("output_norm.weight", shape: [c.embeddingLength]) : nil
        untiedHead = head && !c.tiedEmbeddings
            ? try WeightMatrix(gguf: gguf, name: "output.weight", rows: c.vocabularySize, cols: c.embeddingLength)
            : nil
    }

    /// Opens `path` and loads as `init(gguf:...)` does; the quantized weights are read in place from the file mapping, which the model keeps.
    public convenience init(path: String, layers: Range<Int>? = nil, embeddings: Bool = true, head: Bool = true) throws {
        try self.init(gguf: try GGUFFile(path: path), layers: layers, embeddings: embeddings, head: head)
    }

    /// `SPARSEKV_ATTENTION=materialized` runs every cache's attention on a layer
    /// materialized in fp32 (``KVCache/referenceAttend``) instead of its fused kernel: the
    /// baseline the fused kernels are measured and checked against.
    static let materializedAttention = ProcessInfo.processInfo.environment["SPARSEKV_ATTENTION"] == "materialized"

    public var hasEmbeddings: Bool { tokenEmbedding != nil }
    public var hasHead: Bool { outputNorm != nil }

    /// Bytes of weights this instance holds (quantized blocks as in the file, fp32 for other types).
    public var weightBytes: Int {
        layers.reduce(0) { $0 + $1.byteCount } + (tokenEmbedding?.byteCount ?? 0)
            + (outputNorm?.count ?? 0) * 4 + (untiedHead?.byteCount ?? 0)
    }

    /// An empty cache for this instance's layers.
    public func makeCache(_ type: KVCacheType, capacity: Int? = nil) -> any KVCache {
        type.makeCache(geometry: cacheGeometry(capacity: capacity), rope: rope)
    }

    public func cacheGeometry(capacity: Int? = nil) -> KVCacheGeometry {
        KVCacheGeometry(layers: loadedLayers, kvHeads: config.kvHeadCount, headDim: config.headDim,
                        capacity: capacity ?? config.contextLength)
    }

    // MARK: - Embedding

    /// Hidden states (n, dim) for `tokens`.
    public func embed(_ tokens: [Int32]) throws -> [Float] {
        guard let e = tokenEmbedding else { throw ModelError.embeddingsNotLoaded }
        let dim = config.embeddingLength
        var out = [Float](repeating: 0, count: tokens.count * dim)
        try out.withUnsafeMutableBufferPointer { o in
            for (i, t) in tokens.enumerated() {
                guard t >= 0, Int(t) < config.vocabularySize else {
                    throw ModelError.tokenOutOfVocabulary(token: t, vocabularySize: config.vocabularySize)
                }
                e.row(Int(t), into: o.baseAddress! + i * dim)
            }
        }
        return out
    }

    // MARK: - Transformer blocks

    /// Rows per slice of the feed-forward products in a long batch. Slices are equal to a
    /// row (so none falls under ``WeightMatrix/batchThreshold`` and changes kernel), and
    /// each row's products do not depend on the rows beside it.
    static let ffnSliceTokens = 512

    /// Runs blocks `range` (all loaded ones when nil) on hidden states (n, dim) in place.
    /// The n tokens take the positions after those the cache already holds for each layer.
    public func forward(_ hidden: inout [Float], count n: Int, layers range: Range<Int>? = nil, cache: any KVCache,
                        profile: ForwardProfile? = nil) throws {
        try forward(&hidden, count: n, layers: range, cache: cache, profile: profile, ffnSlice: Self.ffnSliceTokens)
    }

    /// `forward` with the feed-forward slice length given (tests compare slicings).
    func forward(_ hidden: inout [Float], count n: Int, layers range: Range<Int>?, cache: any KVCache,
                 profile: ForwardProfile?, ffnSlice: Int) throws {
        let range = range ?? loadedLayers
        guard n > 0 else { return }
        guard hidden.count == n * config.embeddingLength else {
            throw ModelError.hiddenStateShape(expected: n * config.embeddingLength, found: hidden.count)
        }
        for l in range where !loadedLayers.contains(l) {
            throw ModelError.layerNotLoaded(layer: l, loaded: loadedLayers)
        }
        let ws = Workspace(config: config, tokens: n, ffnRows: min(n, ffnSlice),
                           tileFloats: n >= WeightMatrix.batchThreshold ? maxTileFloats : 0)
        try hidden.withUnsafeMutableBufferPointer { x in
            for l in range {
                try block(l, x.baseAddress!, n, cache, ws, profile)
            }
        }
    }

    private func block(_ l: Int, _ x: UnsafeMutablePointer<Float>, _ n: Int, _ cache: any KVCache, _ ws: Workspace,
                       _ profile: ForwardProfile?) throws {
        let c = config, w = layers[l - loadedLayers.lowerBound]
        let dim = c.embeddingLength, hd = c.headDim
        let start = cache.count(layer: l)
        guard start + n <= cache.geometry.capacity else {
            throw ModelError.contextFull(needed: start + n, contextLength: cache.geometry.capacity)
        }

        var t = profile?.now() ?? 0
        // MARK: attention
        w.attentionNorm.withUnsafeBufferPointer { Kernels.rmsNorm(x, weight: $0.baseAddress!, rows: n, dim: dim, eps: c.rmsEpsilon, into: ws.xb) }
        t = profile?.lap(.elementwise, since: t) ?? 0
        WeightMatrix.apply([w.wq, w.wk, w.wv], ws.xb, count: n, into: [ws.q, ws.k, ws.v], tile: ws.tile)
        t = profile?.lap(.projections, since: t) ?? 0
        rope.apply(ws.q, rows: n, heads: c.headCount, startPosition: start)
        t = profile?.lap(.elementwise, since: t) ?? 0
        // xb is free once q, k and v are made, and q once attention has read it: the
        // attention output goes to xb and its projection to q (no third buffer of a long batch).
        if Self.materializedAttention {
            try cache.append(layer: l, keys: ws.k, values: ws.v, count: n)
            try cache.referenceAttend(layer: l, queries: ws.q, count: n, heads: c.headCount,
                                      scale: 1 / Float(hd).squareRoot(), into: ws.xb)
        } else {
            try cache.appendAndAttend(layer: l, keys: ws.k, values: ws.v, count: n, queries: ws.q, heads: c.headCount,
                                      scale: 1 / Float(hd).squareRoot(), into: ws.xb)
        }
        cache.finishedAttending(layer: l)
        t = profile?.lap(.attention, since: t) ?? 0
        w.wo.apply(ws.xb, count: n, into: ws.q, tile: ws.tile)
        t = profile?.lap(.projections, since: t) ?? 0
        Kernels.add(x, ws.q, count: n * dim)

        // MARK: feed-forward (SwiGLU)
        w.ffnNorm.withUnsafeBufferPointer { Kernels.rmsNorm(x, weight: $0.baseAddress!, rows: n, dim: dim, eps: c.rmsEpsilon, into: ws.xb) }
        t = profile?.lap(.elementwise, since: t) ?? 0
        // Rows are independent here: a long batch goes through in slices of at most
        // `ffnSliceTokens` rows (equal slices), so the (rows, ffn) buffers stay small. Each slice's output
        // overwrites its own rows of xb, which no later slice reads.
        let slices = (n + ws.ffnRows - 1) / ws.ffnRows
        for i in 0..<slices {
            let r0 = n * i / slices, rows = n * (i + 1) / slices - r0
            WeightMatrix.apply([w.wGate, w.wUp], ws.xb + r0 * dim, count: rows, into: [ws.gate, ws.up], tile: ws.tile)
            t = profile?.lap(.ffn, since: t) ?? 0
            Kernels.swiGLU(ws.gate, ws.up, count: rows * c.feedForwardLength)
            t = profile?.lap(.elementwise, since: t) ?? 0
            w.wDown.apply(ws.gate, count: rows, into: ws.xb + r0 * dim, tile: ws.tile)
            t = profile?.lap(.ffn, since: t) ?? 0
        }
        Kernels.add(x, ws.xb, count: n * dim)
        profile?.lap(.elementwise, since: t)
    }

    // MARK: - Output head

    /// Logits (rows.count, vocab) for rows `rows` of hidden states (n, dim): final norm, then LM head.
    public func logits(_ hidden: [Float], count n: Int, rows: Range<Int>? = nil, profile: ForwardProfile? = nil) throws -> [Float] {
        let t = profile?.now() ?? 0
        defer { profile?.lap(.head, since: t) }
        guard let norm = outputNorm, let head = untiedHead ?? tokenEmbedding else { throw ModelError.outputHeadNotLoaded }
        let dim = config.embeddingLength
        guard hidden.count == n * dim else { throw ModelError.hiddenStateShape(expected: n * dim, found: hidden.count) }
        let rows = rows ?? 0..<n
        var normed = [Float](repeating: 0, count: rows.count * dim)
        var out = [Float](repeating: 0, count: rows.count * config.vocabularySize)
        hidden.withUnsafeBufferPointer { h in
            norm.withUnsafeBufferPointer { w in
                normed.withUnsafeMutableBufferPointer { o in
                    Kernels.rmsNorm(h.baseAddress! + rows.lowerBound * dim, weight: w.baseAddress!, rows: rows.count,
                                    dim: dim, eps: config.rmsEpsilon, into: o.baseAddress!)
                }
            }
        }
        normed.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBufferPointer { y in head.apply(x.baseAddress!, count: rows.count, into: y.baseAddress!) }
        }
        return out
    }
}

/// Scratch buffers of one forward call, sized for n tokens.
private final class Workspace {
    /// (n, dim) normed states, then the attention output (n, heads * headDim)
    let xb: UnsafeMutablePointer<Float>
    /// (n, heads * headDim) queries, then the attention projection (n, dim)
    let q: UnsafeMutablePointer<Float>
    /// (n, kvDim) each
    let k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>
    /// (ffnRows, ffn) each
    let gate: UnsafeMutablePointer<Float>, up: UnsafeMutablePointer<Float>
    /// (tileFloats) dequantized weight tile for batched products (nil for single tokens)
    let tile: UnsafeMutablePointer<Float>?

    let ffnRows: Int

    init(config c: LlamaConfig, tokens n: Int, ffnRows: Int, tileFloats: Int) {
        self.ffnRows = ffnRows
        let rows = max(c.embeddingLength, c.headCount * c.headDim)
        xb = .allocate(capacity: n * rows)
        q = .allocate(capacity: n * rows)
        k = .allocate(capacity: n * c.kvDim)
        v = .allocate(capacity: n * c.kvDim)
        gate = .allocate(capacity: ffnRows * c.feedForwardLength)
        up = .allocate(capacity: ffnRows * c.feedForwardLength)
        tile = tileFloats > 0 ? .allocate(capacity: tileFloats) : nil
    }

    deinit {
        for p in [xb, q, k, v, gate, up] { p.deallocate() }
        tile?.deallocate()
    }
}
