import SparseCoding

/// The codes of a few new tokens (replication-style streaming): after the common header
/// and the first position, the dictionary hash and settings, then per layer, keys then
/// values: the section of the tokens' rows (`CSRCodeStream.writeRows`: pair counts,
/// indices re-packed or re-coded from the tokens' first row, coefficients, and the guard
/// entries among the rows), and with `recent=W` the tokens' buffer rows (as in the full
/// transfer). Online atoms are not repeated: a replica got them with the
/// prompt.
extension CSRCache {
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        var w = BinaryWriter(capacity: 256 + 64 * layers.count * tokens.count)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: tokens.count, keysRotated: false).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        writeStamp(to: &w)
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for stream in [keyStreams[s], valueStreams[s]] {
                let perToken = geometry.rowWidth / stream.m
                stream.writeRows(tokens.lowerBound * perToken..<tokens.upperBound * perToken, to: &w)
            }
            if codec.settings.recentTokens > 0 { writeRecentRows(layer: s, tokens: tokens, to: &w) }
        }
        return w.bytes
    }

    /// Parses a CSR append payload made against `codec`'s dictionary and settings
    /// completely (every index names an atom the offline dictionary plus the online budget
    /// can hold, every length matches). Returns (first position, tokens).
    public static func checkAppendPayload(_ bytes: [UInt8], codec: CSRCodec) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard h.kind == format.kind, !h.keysRotated else { throw KVCacheError.incompatiblePayload("'\(h.kind)' is not a CSR append payload") }
            let model = codec.dictionary.model
            guard h.headDim == model.headDim, h.kvHeads == model.kvHeads, h.layers.upperBound <= model.layerCount else {
                throw KVCacheError.incompatiblePayload("payload shape does not match the dictionary's model")
            }
            do {
                let first = Int(try r.read(UInt32.self, "first position"))
                try readStamp(&r, codec: codec)
                let s = codec.settings
                for layer in h.layers {
                    for keys in [true, false] {
                        let group = keys ? codec.dictionary.keys : codec.dictionary.values
                        let stored = group.groups[group.group(ofLayer: layer)], offline = stored.dictionary
                        let m = offline.dimension
                        // A scratch stream parses the section exactly as a cache would.
                        let scratch = CSRCodeStream(
                            offline: offline, atomBits: stored.storedAtoms, encoder: { throw CSRError.badSettings("a scratch stream does not encode") }, settings: s,
                            sparsity: keys ? s.keySparsity : s.valueSparsity,
                            entropyTable: keys ? codec.dictionary.entropyTables?.keys[group.group(ofLayer: layer)]
                                : codec.dictionary.entropyTables?.values[group.group(ofLayer: layer)])
                        try scratch.readRows(count: h.tokenCount * h.kvHeads * h.headDim / m, from: &r,
                                             atomLimit: offline.atomCount + s.onlineAtoms)
                    }
                    if s.recentTokens > 0 {
                        _ = try readRecentRows(&r, settings: s, width: h.kvHeads * h.headDim, tokens: h.tokenCount, end: first + h.tokenCount)
                    }
                }
                guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
                return (first, h.tokenCount)
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
        }
    }
}
