import SparseCoding

/// The codes of a few new tokens (replication-style streaming): after the common header
/// and the first position, the dictionary hash and settings, then per layer, keys then
/// values: the section of the tokens' rows (`CSRCodeStream.writeRows`: pair counts,
/// indices re-packed or re-coded from the tokens' first row, coefficients, and the guard
/// entries among the rows), and with `recent=W` the tokens' buffer rows (as in the full
/// transfer). Online atoms are not repeated: a replica got them with the
/// prompt.
///
/// With `recent=W` a token is coded when it leaves the buffer, so the codes a payload
/// carries are those of the tokens that left it: after the settings, u32 first and u32
/// end of the coded tokens (the same in every layer), from the first token that was in
/// the buffer (at most W before the payload's first) to the cache's coded end; the buffer
/// rows are the payload's tokens not coded. A payload then covers the cache's latest
/// tokens. A replica cut back alike (a resumed session) may hold codes a little further:
/// it takes the rest.
extension CSRCache {
    public func appendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        let codes = try codedSpan(layers: layers, tokens: tokens)
        var w = BinaryWriter(capacity: 256 + 64 * layers.count * tokens.count)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: tokens.count, keysRotated: false).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        writeStamp(to: &w)
        if codec.settings.recentTokens > 0 {
            w.write(UInt32(codes.lowerBound))
            w.write(UInt32(codes.upperBound))
        }
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for stream in [keyStreams[s], valueStreams[s]] {
                let perToken = geometry.rowWidth / stream.m
                stream.writeRows(codes.lowerBound * perToken..<codes.upperBound * perToken, to: &w)
            }
            if codec.settings.recentTokens > 0 { writeRecentRows(layer: s, tokens: tokens, to: &w) }
        }
        return w.bytes
    }

    /// The tokens whose codes a payload of `tokens` carries: those tokens without a buffer;
    /// with `recent=W`, from the first that was in the buffer before them to the coded end.
    func codedSpan(layers: Range<Int>, tokens: Range<Int>) throws -> Range<Int> {
        let recent = codec.settings.recentTokens
        guard recent > 0 else { return tokens }
        let held = try transferTokenCount(layers: layers)
        guard tokens.upperBound == held else {
            throw KVCacheError.incompatiblePayload("with recent=\(recent), an append payload covers the latest tokens (up to \(held)); \(tokens) asked")
        }
        let end = try codedTokens(layers: layers)
        return min(end, max(0, tokens.lowerBound - recent))..<end
    }

    /// Reads and checks the coded span of an append payload of `tokens` tokens from
    /// `first` (see the type's documentation); without a buffer, the tokens themselves.
    static func readCodedSpan(_ r: inout BinaryReader, settings: CSRSettings, first: Int, tokens: Int) throws -> Range<Int> {
        let recent = settings.recentTokens, end = first + tokens
        guard recent > 0 else { return first..<end }
        let a = Int(try r.read(UInt32.self, "first coded token")), b = Int(try r.read(UInt32.self, "coded end"))
        guard a <= b, b <= end, b + recent >= end, a + recent >= first, a <= first else {
            throw KVCacheError.malformedPayload("codes of tokens \(a)..<\(b) for tokens \(first)..<\(end) with recent=\(recent)")
        }
        return a..<b
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
                let codes = try readCodedSpan(&r, settings: s, first: first, tokens: h.tokenCount)
                for layer in h.layers {
                    for keys in [true, false] {
                        let group = keys ? codec.dictionary.keys : codec.dictionary.values
                        let stored = group.groups[group.group(ofLayer: layer)], offline = stored.dictionary
                        let m = offline.dimension
                        // A scratch stream parses the section exactly as a cache would.
                        let scratch = CSRCodeStream(
                            offline: offline, atomBits: stored.storedAtoms, encoder: { throw CSRError.badSettings("a scratch stream does not encode") }, settings: s,
                            sparsity: keys ? s.keySparsity(layer: layer) : s.valueSparsity(layer: layer),
                            entropyTable: keys ? codec.dictionary.entropyTables?.keys[group.group(ofLayer: layer)]
                                : codec.dictionary.entropyTables?.values[group.group(ofLayer: layer)])
                        try scratch.readRows(count: codes.count * h.kvHeads * h.headDim / m, from: &r,
                                             atomLimit: offline.atomCount + s.onlineAtoms)
                    }
                    if s.recentTokens > 0 {
                        _ = try readRecentRows(&r, settings: s, width: h.kvHeads * h.headDim, headDim: h.headDim, tokens: h.tokenCount,
                                               end: first + h.tokenCount, codedEnd: codes.upperBound)
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
