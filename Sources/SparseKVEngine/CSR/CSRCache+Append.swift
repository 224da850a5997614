import SparseCoding

/// The codes of a few new tokens (replication-style streaming): after the common header
/// and the first position, the dictionary hash and settings, then per layer, keys then
/// values: the tokens' packed indices (re-packed from the tokens' first row), their
/// coefficients (fp16, or int8 and one fp16 scale per row), and the guard entries among
/// their rows (count, rows relative to the tokens' first row, fp16 values). Online atoms
/// are not repeated: a replica got them with the prompt.
extension CSRCache {
    func codeAppendPayload(layers: Range<Int>, tokens: Range<Int>) throws -> [UInt8] {
        try checkAppendRange(layers: layers, tokens: tokens)
        var w = BinaryWriter(capacity: 256 + 64 * layers.count * tokens.count)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: tokens.count, keysRotated: false).write(to: &w)
        w.write(UInt32(tokens.lowerBound))
        w.write(codec.dictionary.contentHash)
        w.write(codec.settings.description)
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for stream in [keyStreams[s], valueStreams[s]] {
                let perToken = geometry.rowWidth / stream.m
                stream.writeRows(tokens.lowerBound * perToken..<tokens.upperBound * perToken, to: &w)
            }
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
            guard h.kind == "csr", !h.keysRotated else { throw KVCacheError.incompatiblePayload("'\(h.kind)' is not a CSR append payload") }
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
                        let offline = group.groups[group.group(ofLayer: layer)].dictionary
                        let m = offline.dimension, p = keys ? s.keySparsity : s.valueSparsity
                        let width = CSRCodec.indexWidth(atoms: offline.atomCount + s.onlineAtoms)
                        let rows = h.tokenCount * h.kvHeads * h.headDim / m
                        let indices = try r.readArray(UInt8.self, count: (rows * p * width + 7) / 8, "indices")
                        let limit = offline.atomCount + s.onlineAtoms
                        let bad = indices.withUnsafeBufferPointer { ib in
                            width > 0 && (0..<rows * p).contains { CSRCodeStream.readIndex(ib.baseAddress!, $0, width: width) >= limit }
                        }
                        if bad { throw KVCacheError.malformedPayload("an index names no atom") }
                        if s.coefficients == .float16 {
                            _ = try r.readArray(UInt16.self, count: rows * p, "coefficients")
                        } else {
                            _ = try r.readArray(Int8.self, count: rows * p, "coefficients")
                            _ = try r.readArray(UInt16.self, count: rows, "scales")
                        }
                        let guards = Int(try r.read(UInt32.self, "guard count"))
                        guard guards <= rows else { throw KVCacheError.malformedPayload("\(guards) guard rows for \(rows) rows") }
                        let guardRows = try r.readArray(UInt32.self, count: guards, "guard rows")
                        guard guardRows.allSatisfy({ Int($0) < rows }) else { throw KVCacheError.malformedPayload("guard row out of range") }
                        _ = try r.readArray(UInt16.self, count: guards * m, "guard values")
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

extension CSRCodeStream {
    /// Rows `rows` as an append payload section (see `CSRCache.codeAppendPayload`).
    func writeRows(_ rows: Range<Int>, to w: inout BinaryWriter) {
        let p = sparsity, count = rows.count * p
        var packed = [UInt8](repeating: 0, count: (count * width + 7) / 8)
        if width > 0 {
            indexBytes.withUnsafeBufferPointer { ib in
                for k in 0..<count {
                    let v = Self.readIndex(ib.baseAddress!, rows.lowerBound * p + k, width: width)
                    let bit = k * width
                    for b in 0..<width where v >> b & 1 == 1 { packed[(bit + b) >> 3] |= UInt8(1) << UInt8((bit + b) & 7) }
                }
            }
        }
        w.write(array: packed)
        if format == .float16 {
            w.write(array: Array(coefficients16[rows.lowerBound * p..<rows.upperBound * p]))
        } else {
            w.write(array: Array(coefficients8[rows.lowerBound * p..<rows.upperBound * p]))
            w.write(array: Array(scales[rows]))
        }
        let guarded = guardRows.indices.filter { rows.contains(Int(guardRows[$0])) }
        w.write(UInt32(guarded.count))
        w.write(array: guarded.map { guardRows[$0] - UInt32(rows.lowerBound) })
        for i in guarded { w.write(array: Array(guardValues[i * m..<(i + 1) * m])) }
    }
}
