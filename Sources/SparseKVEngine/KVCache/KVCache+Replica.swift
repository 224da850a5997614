/// Keeping a replica of a cache current: a cache that holds a session's first N tokens
/// (a transfer's ``KVCache/serialize(layers:)`` payload, deserialized) takes the append
/// payload of the tokens that follow (``KVCache/appendPayload(layers:tokens:)``) and ends
/// up holding what the original holds: for a CSR cache the same codes, guard entries and
/// online atoms byte for byte (for KIVI the same quantized groups and fp16 window), so it
/// serializes and attends exactly as the original. Each cache type applies its own
/// payloads (``KVCache/applyAppendPayload(_:)``); what is common is the header check here.
extension KVCache {
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
