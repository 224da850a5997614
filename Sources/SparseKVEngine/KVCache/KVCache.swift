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

    /// Every byte this cache holds for `layer` (codes, scales, windows, ...).
    func byteCount(layer: Int) -> Int

    /// Drops positions >= `count` in every layer.
    func truncate(to count: Int)

    /// This cache's contents for `layers` (a sub-range of geometry.layers) in the
    /// self-describing KV transfer format.
    func serialize(layers: Range<Int>) throws -> [UInt8]
}

extension KVCache {
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
