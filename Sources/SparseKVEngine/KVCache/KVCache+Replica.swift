/// Keeping a replica of a cache current: a cache that holds a session's first N tokens
/// (a transfer's ``KVCache/serialize(layers:)`` payload, deserialized) takes the append
/// payload of the tokens that follow (``KVCache/appendPayload(layers:tokens:)``) and ends
/// up holding what the original holds: for a CSR cache the same codes, guard entries and
/// online atoms byte for byte, so it serializes and attends exactly as the original.
extension KVCache {
    /// Whether this cache can take append payloads (CSR and dense fp32/fp16 caches;
    /// KIVI's window rows are sent rotated, which its append does not take).
    public var acceptsAppendPayloads: Bool {
        self is CSRCache || self is DenseKVCache<Float> || self is DenseKVCache<Float16>
    }

    /// Appends the tokens of an append payload. The payload's layers must be held here and
    /// each must hold exactly the payload's first position; the payload is parsed and
    /// checked completely before anything changes. Returns (first position, tokens).
    @discardableResult
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        if let csr = self as? CSRCache { return try csr.applyCodeAppendPayload(bytes) }
        if let dense = self as? DenseKVCache<Float> { return try dense.applyStoredRowsPayload(bytes) }
        if let dense = self as? DenseKVCache<Float16> { return try dense.applyStoredRowsPayload(bytes) }
        throw KVCacheError.incompatiblePayload("a '\(kind)' cache does not take append payloads; a replica of it needs a full transfer")
    }

    /// The header of an append payload made for this cache's layers, checked against the
    /// cache: same shape, layers held, every one holding exactly `first` tokens.
    func readAppendHeader(_ r: inout BinaryReader, kind expected: String, keysRotated: Bool) throws -> (header: KVPayloadHeader, first: Int) {
        let h = try KVPayloadHeader.read(from: &r)
        guard h.kind == expected, h.keysRotated == keysRotated else {
            throw KVCacheError.incompatiblePayload("append payload '\(h.kind)' (keys rotated: \(h.keysRotated)) for a '\(kind)' cache (keys rotated: \(keysRotated))")
        }
        guard h.kvHeads == geometry.kvHeads, h.headDim == geometry.headDim else {
            throw KVCacheError.incompatiblePayload("append payload has \(h.kvHeads) heads of \(h.headDim), the cache \(geometry.kvHeads) of \(geometry.headDim)")
        }
        let first: Int
        do { first = Int(try r.read(UInt32.self, "first position")) } catch let e as BinaryReader.OutOfBounds {
            throw KVCacheError.malformedPayload("truncated in \(e.what)")
        }
        let held = try transferTokenCount(layers: h.layers)
        guard first == held else {
            throw KVCacheError.incompatiblePayload("append payload starts at token \(first); the cache holds \(held) tokens for layers \(h.layers)")
        }
        guard first + h.tokenCount <= geometry.capacity else {
            throw KVCacheError.full(layer: h.layers.lowerBound, capacity: geometry.capacity, needed: first + h.tokenCount)
        }
        return (h, first)
    }
}

extension DenseKVCache {
    /// Appends rows exactly as ``storedRowsPayload(layers:tokens:)`` sent them.
    func applyStoredRowsPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
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
}
