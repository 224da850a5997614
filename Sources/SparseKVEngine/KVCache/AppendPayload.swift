/// The KV of a few new tokens, as a replica that already holds the earlier ones needs it
/// to keep up (replication-style streaming): the common ``KVPayloadHeader`` (token count =
/// the new tokens), the first new position (u32), then the cache's own representation of
/// just those tokens (``KVCache/appendPayload(layers:tokens:)``). Dense caches send their
/// stored rows (DenseKVCache+Replica.swift), KIVI its fp16 window rows and quantized group
/// counts (KIVICache+Replica.swift), a CSR cache the tokens' codes (CSRCache+Append.swift).
extension KVCache {
    /// The layers hold the same token count, and `tokens` is a non-empty range of them.
    func checkAppendRange(layers: Range<Int>, tokens: Range<Int>) throws {
        let n = try transferTokenCount(layers: layers)
        guard !tokens.isEmpty, tokens.upperBound <= n else {
            throw KVCacheError.incompatiblePayload("tokens \(tokens) requested, \(n) held")
        }
    }

    /// Tokens `tokens` of `layers` as dense rows of `Element` (keys rotated), read the way
    /// attention reads them.
    public func denseAppendPayload<Element: DenseKVElement>(layers: Range<Int>, tokens: Range<Int>, as _: Element.Type) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        let g = geometry, d = g.headDim
        var w = BinaryWriter(capacity: 64 + layers.count * tokens.count * g.rowWidth * 2 * MemoryLayout<Element>.size)
        KVPayloadHeader(kind: Element.kindName, layers: layers, kvHeads: g.kvHeads, headDim: d, tokenCount: tokens.count,
                        keysRotated: true).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        var converted = [Element](repeating: Element(0), count: tokens.count * d)
        for layer in layers {
            for h in 0..<g.kvHeads {
                withKeysAndValues(layer: layer, kvHead: h) { keys, values, _ in
                    for source in [keys, values] {
                        for i in 0..<tokens.count * d { converted[i] = Element(source[tokens.lowerBound * d + i]) }
                        converted.withUnsafeBytes { w.write(raw: $0) }
                    }
                }
            }
        }
        return w.bytes
    }
}
