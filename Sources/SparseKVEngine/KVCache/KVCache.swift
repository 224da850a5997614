import CBLAS

/// Shape of the KV cache a model instance needs: which layers, how many KV heads of
/// which width, and the most positions a session may hold.
public struct KVCacheGeometry: Sendable, Equatable, Codable {
    public var layers: Range<Int>
    public var kvHeads: Int
    public var headDim: Int
    public var capacity: Int

    public init(layers: Range<Int>, kvHeads: Int, headDim: Int, capacity: Int) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.capacity = capacity
    }

    /// Floats of K (or V) for one token in one layer.
    public var rowWidth: Int { kvHeads * headDim }
}

/// One session's attention cache for a contiguous range of layers.
///
/// The model hands every implementation **pre-RoPE** keys together with their
/// positions; an implementation may store them rotated (dense caches, cheapest to read)
/// or unrotated and rotate on read (sparse-coded caches, whose dictionaries fit
/// position-free keys better). Reads always yield rotated keys, as fp32.
public protocol KVCache: AnyObject {
    var geometry: KVCacheGeometry { get }

    /// Short name of the representation, e.g. "fp32", "fp16".
    var kind: String { get }

    /// Tokens held for `layer`. Layers fill in order during a forward pass, so after a
    /// complete pass every layer holds the same count.
    func count(layer: Int) -> Int

    /// Appends `n` tokens at positions count(layer) ..< count(layer) + n.
    /// - Parameters:
    ///   - keys: (n, kvHeads * headDim), **before** RoPE
    ///   - values: (n, kvHeads * headDim)
    func append(layer: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count n: Int) throws

    /// Calls `body` with one KV head's keys (count, headDim), RoPE applied, and values
    /// (count, headDim), both fp32 and row-contiguous. The pointers are valid only
    /// inside `body`.
    func withKeysAndValues<R>(
        layer: Int, kvHead: Int,
        _ body: (_ keys: UnsafePointer<Float>, _ values: UnsafePointer<Float>, _ count: Int) throws -> R
    ) rethrows -> R

    /// Causal attention of the layer's newest `n` tokens, whose keys and values this cache
    /// already holds (count(layer) = start + n): query token i, at position start + i,
    /// attends to positions 0 ... start + i. Each cache reads its own format here
    /// (``FusedAttention``); the default is ``referenceAttend``.
    /// - Parameters:
    ///   - queries: (n, heads * headDim), RoPE applied
    ///   - out: (n, heads * headDim)
    func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                into out: UnsafeMutablePointer<Float>) throws

    /// ``append(layer:keys:values:count:)`` of `n` tokens, then ``attend(layer:queries:count:heads:scale:into:)``
    /// of them: what the forward pass does at each layer. A cache may overlap the two (CSR:
    /// a decode step's pursuit runs beside its attention); the result is the same. The
    /// default makes the two calls.
    func appendAndAttend(layer: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count n: Int,
                         queries: UnsafePointer<Float>, heads: Int, scale: Float, into out: UnsafeMutablePointer<Float>) throws

    /// Said by the forward pass once the attention of `layer`'s newest tokens is done: a
    /// cache may drop what only that attention reads (CSR: the latest append's exact rows,
    /// which the next append replaces anyway). Reads after it see the layer as the next
    /// step's attention will. The default keeps everything.
    func finishedAttending(layer: Int)

    /// Every byte this cache holds for `layer` (codes, scales, windows, ...).
    func byteCount(layer: Int) -> Int

    /// Drops positions >= `count` in every layer.
    func truncate(to count: Int)

    /// This cache's contents for `layers` (a sub-range of geometry.layers) in the
    /// self-describing KV transfer format.
    func serialize(layers: Range<Int>) throws -> [UInt8]

    /// The KV of `tokens` for `layers` in this cache's own streaming form: what a replica
    /// that holds the earlier tokens needs to keep up (see AppendPayload.swift).
    func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8]

    /// Appends the tokens of an ``appendPayload(layers:tokens:)`` made by a cache of this
    /// kind. The payload's layers must be held here and each must hold exactly the
    /// payload's first position; the payload is parsed and checked completely before
    /// anything changes. Returns (first position, tokens).
    @discardableResult
    func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int)
}

extension KVCache {
    public func finishedAttending(layer: Int) {}

    public func appendAndAttend(layer: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count n: Int,
                                queries: UnsafePointer<Float>, heads: Int, scale: Float, into out: UnsafeMutablePointer<Float>) throws {
        try append(layer: layer, keys: keys, values: values, count: n)
        try attend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
    }

    public func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) throws {
        try referenceAttend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
    }

    /// Attention on the layer materialized in fp32 by ``withKeysAndValues`` (one KV head
    /// at a time, sgemm for scores and values): the reference every fused kernel is
    /// tested against, and the path of caches without one.
    public func referenceAttend(layer: Int, queries q: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                                into out: UnsafeMutablePointer<Float>) throws {
        try requireLayer(layer)
        let hd = geometry.headDim, qDim = heads * hd, group = heads / geometry.kvHeads
        let total = count(layer: layer), start = total - n
        var scores = [Float](repeating: 0, count: n * total)  // (n, total)
        scores.withUnsafeMutableBufferPointer { sb in
            let s = sb.baseAddress!
            for g in 0..<geometry.kvHeads {
                withKeysAndValues(layer: layer, kvHead: g) { keys, values, _ in
                    for h in g * group..<(g + 1) * group {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(total), Int32(hd), scale,
                                    q + h * hd, Int32(qDim), keys, Int32(hd), 0, s, Int32(total))
                        for i in 0..<n {
                            // Causal mask: token i (position start + i) sees positions 0 ... start + i.
                            let row = s + i * total, visible = start + i + 1
                            Kernels.softmax(row, count: visible)
                            if visible < total { (row + visible).update(repeating: 0, count: total - visible) }
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(hd), Int32(total), 1,
                                    s, Int32(total), values, Int32(hd), 0, out + h * hd, Int32(qDim))
                    }
                }
            }
        }
    }

    /// Throws unless this cache holds `layer`.
    func requireLayer(_ layer: Int) throws {
        guard geometry.layers.contains(layer) else {
            throw KVCacheError.layerOutOfRange(layer: layer, layers: geometry.layers)
        }
    }

    /// ``FusedAttention`` on `source`, this cache's layer `layer` in its own format, for the
    /// n newest tokens.
    func fusedAttend<S: AttentionSource>(_ source: S, layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int,
                                         scale: Float, into out: UnsafeMutablePointer<Float>,
                                         beside: FusedAttention.BesideUnits? = nil) {
        FusedAttention.run(source, queries: queries, count: n, start: count(layer: layer) - n, heads: heads,
                           kvHeads: geometry.kvHeads, scale: scale, into: out, beside: beside)
    }

    /// Bytes over all layers of the cache.
    public var byteCount: Int { geometry.layers.reduce(0) { $0 + byteCount(layer: $1) } }

    /// The token count a transfer of `layers` carries: checks that the layers are held
    /// and that every one of them holds the same number of tokens.
    public func transferTokenCount(layers: Range<Int>) throws -> Int {
        guard !layers.isEmpty, layers.lowerBound >= geometry.layers.lowerBound,
              layers.upperBound <= geometry.layers.upperBound
        else { throw KVCacheError.layerOutOfRange(layer: layers.lowerBound, layers: geometry.layers) }
        let n = count(layer: layers.lowerBound)
        for layer in layers where count(layer: layer) != n {
            throw KVCacheError.incompatiblePayload(
                "layer \(layer) holds \(count(layer: layer)) tokens, layer \(layers.lowerBound) holds \(n)")
        }
        return n
    }

    /// Tokens of the first layer (the session length once a pass completes).
    public var tokenCount: Int { geometry.layers.isEmpty ? 0 : count(layer: geometry.layers.lowerBound) }
}
