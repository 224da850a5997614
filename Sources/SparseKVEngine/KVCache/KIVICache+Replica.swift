/// KIVI's append payload and format. The newest tokens of a KIVI cache sit in its fp16
/// window (keys rotated), and quantizing always takes the window's oldest 32 rows, a pure
/// function of those rows. So a replica that holds the same quantized groups and window
/// rows as the original needs only the new tokens' fp16 rows and how many groups the
/// original has quantized by now: it appends the rows, quantizes its oldest rows up to
/// that count, and holds the original's codes, scales and window byte for byte, however
/// the original's appends were batched.
///
/// Layout after the common ``KVPayloadHeader`` (kind "kiviN", keys rotated) and the first
/// position (u32): the window (u32), then per (layer, KV head): quantized groups (u32),
/// the tokens' keys (tokens, headDim) fp16, their values (tokens, headDim) fp16.
extension KIVICache {
    /// The format of KIVI caches with `bits`-bit codes.
    public static func format(bits: Int) -> KVCacheFormat {
        KVCacheFormat(
            kind: kind(bits: bits), supportsReplica: true,
            decode: { payload, capacity, rope, _ in try KIVICache.deserialize(payload, capacity: capacity, rope: rope) },
            checkAppend: { payload, _ in try KIVICache.checkAppendPayload(payload, bits: bits) })
    }

    /// One (layer, KV head)'s share of an append payload.
    struct AppendRows {
        /// Groups the original has quantized once these tokens are in.
        var groups: Int
        /// (tokens, headDim) keys, rotated, and values
        var keys: [Float16]
        var values: [Float16]
    }

    /// Tokens `tokens` of `layers` from the fp16 window. Throws when some of them are
    /// quantized already (only a full transfer carries those exactly).
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        let g = geometry, d = g.headDim
        var w = BinaryWriter(capacity: 64 + layers.count * g.kvHeads * (4 + tokens.count * d * 4))
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: g.kvHeads, headDim: d, tokenCount: tokens.count,
                        keysRotated: true).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        w.write(UInt32(window))
        for layer in layers {
            for h in 0..<g.kvHeads {
                let slot = slots[(layer - g.layers.lowerBound) * g.kvHeads + h]
                let start = slot.groups * Self.group  // position of the window's first row
                guard tokens.lowerBound >= start else {
                    throw KVCacheError.incompatiblePayload(
                        "tokens \(tokens) of layer \(layer) requested; those before \(start) are quantized already, so a copy of them needs a full transfer")
                }
                w.write(UInt32(slot.groups))
                let lo = (tokens.lowerBound - start) * d, hi = (tokens.upperBound - start) * d
                w.write(array: Array(slot.recentK[lo..<hi]))
                w.write(array: Array(slot.recentV[lo..<hi]))
            }
        }
        return w.bytes
    }

    /// Appends the tokens of ``appendPayload(layers:tokens:)`` and quantizes as the
    /// original did. Everything is parsed and checked before anything changes.
    @discardableResult
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let (h, first) = try readAppendHeader(&r, kind: kind, keysRotated: true)
            let (sentWindow, rows) = try Self.readAppendBody(&r, header: h, first: first)
            guard sentWindow == window else {
                throw KVCacheError.incompatiblePayload("append payload from a KIVI cache with a \(sentWindow)-token window; this one keeps \(window)")
            }
            let firstSlot = (h.layers.lowerBound - geometry.layers.lowerBound) * geometry.kvHeads
            for (i, x) in rows.enumerated() where x.groups < slots[firstSlot + i].groups {
                throw KVCacheError.incompatiblePayload("append payload has \(x.groups) quantized groups; this cache has \(slots[firstSlot + i].groups) already")
            }
            for (i, x) in rows.enumerated() {
                let slot = slots[firstSlot + i]
                slot.recentK += x.keys
                slot.recentV += x.values
                quantizeOldestGroups(slot, count: x.groups - slot.groups)
            }
            for layer in h.layers { counts[layer - geometry.layers.lowerBound] = first + h.tokenCount }
            return (first, h.tokenCount)
        }
    }

    /// Parses a KIVI append payload of `bits`-bit codes completely, for a receiver that
    /// counts and discards it. Returns (first position, tokens).
    public static func checkAppendPayload(_ bytes: [UInt8], bits: Int) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard h.kind == kind(bits: bits), h.keysRotated else {
                throw KVCacheError.incompatiblePayload("'\(h.kind)' is not a \(kind(bits: bits)) append payload")
            }
            let first: Int
            do { first = Int(try r.read(UInt32.self, "first position")) } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
            _ = try readAppendBody(&r, header: h, first: first)
            return (first, h.tokenCount)
        }
    }

    /// The window and every (layer, KV head)'s rows after the first position; the group
    /// counts must fit the tokens held once the rows are in, and nothing may follow.
    static func readAppendBody(_ r: inout BinaryReader, header h: KVPayloadHeader, first: Int) throws -> (window: Int, rows: [AppendRows]) {
        let perHead = h.tokenCount * h.headDim
        do {
            let window = Int(try r.read(UInt32.self, "window"))
            guard window <= KVPayloadHeader.maxTokens else { throw KVCacheError.malformedPayload("window \(window)") }
            var rows: [AppendRows] = []
            for _ in 0..<h.layers.count * h.kvHeads {
                let groups = Int(try r.read(UInt32.self, "groups"))
                guard groups * group <= first + h.tokenCount else {
                    throw KVCacheError.malformedPayload("\(groups) quantized groups for \(first + h.tokenCount) tokens")
                }
                rows.append(AppendRows(groups: groups, keys: try r.readArray(Float16.self, count: perHead, "keys"),
                                       values: try r.readArray(Float16.self, count: perHead, "values")))
            }
            guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
            return (window, rows)
        } catch let e as BinaryReader.OutOfBounds {
            throw KVCacheError.malformedPayload("truncated in \(e.what)")
        }
    }
}
