/// The dense caches' format: a full transfer is the stored rows (``serialize(layers:)``),
/// an append payload the new tokens' stored rows after the header and first position,
/// (layer, KV head, keys then values), keys as stored (rotated unless `rotateOnRead`).
extension DenseKVCache {
    /// The format of dense caches of `Element`.
    public static var format: KVCacheFormat {
        KVCacheFormat(
            kind: Element.kindName, supportsReplica: true,
            decode: { payload, capacity, rope, _ in try DenseKVCache.deserialize(payload, capacity: capacity, rope: rope) },
            checkAppend: { payload, _ in try DenseKVCache.checkAppendPayload(payload) })
    }

    /// The tokens' rows exactly as stored (no read of the rest of the history).
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
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

    /// Appends rows exactly as ``appendPayload(layers:tokens:)`` sent them.
    @discardableResult
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let (h, first) = try readAppendHeader(&r, kind: kind, keysRotated: !rotateOnRead)
            let perHead = h.tokenCount * h.headDim
            let expected = h.layers.count * h.kvHeads * perHead * 2 * MemoryLayout<Element>.size
            guard r.remaining == expected else {
                throw KVCacheError.malformedPayload("\(r.remaining) bytes of rows, the header needs \(expected)")
            }
            var rows: [[Element]] = []
            do {
                for _ in 0..<h.layers.count * h.kvHeads * 2 { rows.append(try r.readArray(Element.self, count: perHead, "rows")) }
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
            var k = 0
            for layer in h.layers {
                let s = layer - geometry.layers.lowerBound
                for head in 0..<h.kvHeads {
                    keys[s * h.kvHeads + head].append(contentsOf: rows[k])
                    values[s * h.kvHeads + head].append(contentsOf: rows[k + 1])
                    k += 2
                }
                counts[s] = first + h.tokenCount
            }
            return (first, h.tokenCount)
        }
    }

    /// Parses an append payload of this element type completely: header, first position,
    /// and exactly the rows the header announces. Returns (first position, tokens).
    public static func checkAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard h.kind == Element.kindName else {
                throw KVCacheError.incompatiblePayload("'\(h.kind)' is not a \(Element.kindName) append payload")
            }
            do {
                let first = Int(try r.read(UInt32.self, "first position"))
                let expected = h.layers.count * h.kvHeads * h.tokenCount * h.headDim * 2 * MemoryLayout<Element>.size
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
