/// The KV of a few new tokens, as a replica that already holds the earlier ones needs it
/// to keep up (replication-style streaming): the common ``KVPayloadHeader`` (token count =
/// the new tokens), the first new position (u32), then the cache's own representation of
/// just those tokens. Dense caches send their stored rows (fp32, or fp16 for fp16 and
/// KIVI, whose newest tokens sit in an fp16 window and quantize deterministically);
/// a CSR cache sends the tokens' codes (see `CSRCache.appendPayload`).
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

    /// The KV of `tokens` for `layers` in this cache's streaming form (see above).
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        if let csr = self as? CSRCache { return try csr.codeAppendPayload(layers: layers, tokens: tokens) }
        if let dense = self as? DenseKVCache<Float> { return try dense.storedRowsPayload(layers: layers, tokens: tokens) }
        if let dense = self as? DenseKVCache<Float16> { return try dense.storedRowsPayload(layers: layers, tokens: tokens) }
        if let kivi = self as? KIVICache, let payload = try kivi.recentRowsPayload(layers: layers, tokens: tokens) { return payload }
        return try denseAppendPayload(layers: layers, tokens: tokens, as: Float16.self)
    }
}

/// Checks of a received append payload, for a receiver that counts and discards it.
public enum AppendPayload {
    /// Parses a dense append payload completely: header, first position, and exactly the
    /// rows the header announces. Returns (first position, tokens).
    public static func checkDense(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            let size: Int
            switch h.kind {
            case "fp32": size = 4
            case "fp16": size = 2
            default: throw KVCacheError.incompatiblePayload("'\(h.kind)' is not a dense append payload")
            }
            do {
                let first = Int(try r.read(UInt32.self, "first position"))
                let expected = h.layers.count * h.kvHeads * h.tokenCount * h.headDim * 2 * size
                guard r.remaining == expected else {
                    throw KVCacheError.malformedPayload("\(r.remaining) bytes of rows, the header needs \(expected)")
                }
                return (first, h.tokenCount)
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
        }
    }
}

extension DenseKVCache {
    /// The tokens' rows exactly as stored (no read of the rest of the history).
    func storedRowsPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        let g = geometry, d = g.headDim, size = MemoryLayout<Element>.size
        var w = BinaryWriter(capacity: 64 + layers.count * tokens.count * g.rowWidth * 2 * size)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: g.kvHeads, headDim: d, tokenCount: tokens.count,
                        keysRotated: !rotateOnRead).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        for layer in layers {
            for h in 0..<g.kvHeads {
                let (k, v) = rows(layer: layer, kvHead: h)
                for buffer in [k, v] {
                    w.write(raw: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[tokens.lowerBound * d * size..<tokens.upperBound * d * size]))
                }
            }
        }
        return w.bytes
    }
}

extension KIVICache {
    /// The tokens' rows from the fp16 window, when they are all still in it (nil otherwise):
    /// a replica quantizes them itself, exactly as this cache will.
    func recentRowsPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8]? {
        try checkAppendRange(layers: layers, tokens: tokens)
        let g = geometry, d = g.headDim
        var w = BinaryWriter(capacity: 64 + layers.count * tokens.count * g.rowWidth * 4)
        KVPayloadHeader(kind: "fp16", layers: layers, kvHeads: g.kvHeads, headDim: d, tokenCount: tokens.count,
                        keysRotated: true).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        for layer in layers {
            for h in 0..<g.kvHeads {
                let slot = slots[(layer - g.layers.lowerBound) * g.kvHeads + h]
                let first = count(layer: layer) - slot.recentK.count / d  // position of the window's first row
                guard tokens.lowerBound >= first else { return nil }
                let lo = (tokens.lowerBound - first) * d, hi = (tokens.upperBound - first) * d
                w.write(array: Array(slot.recentK[lo..<hi]))
                w.write(array: Array(slot.recentV[lo..<hi]))
            }
        }
        return w.bytes
    }
}
