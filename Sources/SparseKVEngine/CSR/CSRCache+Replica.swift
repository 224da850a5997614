import SparseCoding

/// A CSR replica keeps up with its original by taking the codes of each new token
/// (``appendPayload(layers:tokens:)``): packed indices, coefficients, scales and guard
/// entries are appended as the original stored them, so the replica's streams are the
/// original's byte for byte. Online atoms are chosen once, from the prompt, and came with
/// the replica's first full transfer. The exact rows of the original's latest append are
/// working memory of its forward pass and do not travel: the replica's next append sets
/// its own, exactly as the original's next append replaces them. With `recent=W` the
/// buffer's rows travel with the codes of the tokens that left it, so the replica's buffer
/// is the original's.
extension CSRCache {
    @discardableResult
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let (h, first) = try readAppendHeader(&r, kind: kind, keysRotated: false)
            var parsed: [CSRCodeStream] = []
            var recent: [(first: Int, count: Int, keys: [Float], values: [Float])] = []
            let codes: Range<Int>
            do {
                try Self.readStamp(&r, codec: codec)
                codes = try Self.readCodedSpan(&r, settings: codec.settings, first: first, tokens: h.tokenCount)
                for layer in h.layers {
                    let s = layer - geometry.layers.lowerBound
                    for stream in [keyStreams[s], valueStreams[s]] {
                        // Parsed as the stream's own stored form (pair counts, coded indices) into a scratch.
                        let scratch = stream.scratch()
                        try scratch.readRows(count: codes.count * geometry.rowWidth / stream.m, from: &r,
                                             atomLimit: stream.offline.atomCount + stream.onlineCount)
                        parsed.append(scratch)
                    }
                    if codec.settings.recentTokens > 0 {
                        recent.append(try Self.readRecentRows(&r, settings: codec.settings, width: geometry.rowWidth, headDim: geometry.headDim,
                                                              tokens: h.tokenCount, end: first + h.tokenCount, codedEnd: codes.upperBound))
                    }
                }
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
            guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
            // The codes go on from where this cache's end (with a buffer, perhaps inside them).
            let held = try codedTokens(layers: h.layers)
            guard codes.contains(held) || codes.upperBound == held else {
                throw KVCacheError.incompatiblePayload("the payload carries codes of tokens \(codes), this cache's end at token \(held)")
            }
            var k = 0
            for layer in h.layers {
                let s = layer - geometry.layers.lowerBound
                for stream in [keyStreams[s], valueStreams[s]] {
                    let skip = (held - codes.lowerBound) * geometry.rowWidth / stream.m
                    stream.appendRows(of: parsed[k], droppingFirst: skip)
                    k += 1
                }
                counts[s] = first + h.tokenCount
                if recent.isEmpty {
                    pending[s] = nil
                } else {
                    // The buffer moves with the tokens; rows before them stay if they end where they start.
                    let x = recent[layer - h.layers.lowerBound]
                    takeRecentRows(layer: s, first: x.first, count: x.count, keys: x.keys, values: x.values)
                }
            }
            return (first, h.tokenCount)
        }
    }
}
