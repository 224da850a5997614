/// A dense fp32 cache that also measures the queries attending to it: every ``attend``
/// adds its (post-RoPE) queries' energy per RoPE pair to ``energy`` before the dense cache
/// answers. The calibration pass of `dict train` runs the model through it to measure the
/// query-aware key metric (``CSRKeyMetric``).
public final class QueryRecordingCache: KVCache {
    public let inner: DenseKVCache<Float>
    /// Query energy per (layer, KV head, pair) over everything attended so far; layer
    /// indices are the model's.
    public private(set) var energy: QueryPairEnergy

    public init(_ inner: DenseKVCache<Float>, energy: QueryPairEnergy) {
        self.inner = inner
        self.energy = energy
    }

    public var geometry: KVCacheGeometry { inner.geometry }
    public var kind: String { inner.kind }
    public func count(layer: Int) -> Int { inner.count(layer: layer) }

    public func append(layer: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count n: Int) throws {
        try inner.append(layer: layer, keys: keys, values: values, count: n)
    }

    public func withKeysAndValues<R>(
        layer: Int, kvHead: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int) throws -> R
    ) rethrows -> R {
        try inner.withKeysAndValues(layer: layer, kvHead: kvHead, body)
    }

    public func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) throws {
        try requireLayer(layer)
        energy.add(layer: layer, queries: queries, count: n, heads: heads)
        try inner.attend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
    }

    public func byteCount(layer: Int) -> Int { inner.byteCount(layer: layer) }
    public func truncate(to count: Int) { inner.truncate(to: count) }
    public func serialize(layers: Range<Int>) throws -> [UInt8] { try inner.serialize(layers: layers) }
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try inner.appendPayload(layers: layers, tokens: tokens)
    }
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try inner.applyAppendPayload(bytes)
    }
}
