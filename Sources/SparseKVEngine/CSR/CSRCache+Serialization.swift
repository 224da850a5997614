import SparseCoding

/// The CSR transfer format: the common ``KVPayloadHeader`` (kind "csr", keys not
/// rotated), the content hash of the dictionary the codes refer to, the settings that fix
/// the layout, then per layer the key stream and the value stream: online atoms, packed
/// indices, coefficients, guard bank. A receiver refuses codes made against another
/// dictionary or with other settings, and checks every length against the header.
extension CSRCache {
    public func serialize(layers: Range<Int>) throws -> [UInt8] {
        let n = try transferTokenCount(layers: layers)
        var w = BinaryWriter(capacity: 256 + layers.reduce(0) { $0 + byteCount(layer: $1) } + 32 * layers.count)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: n, keysRotated: false).write(to: &w)
        w.write(codec.dictionary.contentHash)
        w.write(codec.settings.description)
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for stream in [keyStreams[s], valueStreams[s]] {
                w.write(UInt32(stream.onlineCount))
                w.write(array: stream.onlineAtoms)
                w.write(array: stream.indexBytes)
                w.write(array: stream.coefficients16)
                w.write(array: stream.coefficients8)
                w.write(array: stream.scales)
                w.write(UInt32(stream.guardRows.count))
                w.write(array: stream.guardRows)
                w.write(array: stream.guardValues)
            }
        }
        return w.bytes
    }

    /// Rebuilds a cache from ``serialize(layers:)`` output.
    ///
    /// - Throws: `CSRError.dictionaryHashMismatch` for codes made against another
    ///   dictionary; `KVCacheError.incompatiblePayload` for other settings or shapes;
    ///   `KVCacheError.malformedPayload` for anything truncated, oversized or out of range.
    public static func deserialize(_ bytes: [UInt8], capacity: Int, rope: RoPE, codec: CSRCodec) throws -> CSRCache {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard h.kind == "csr" else { throw KVCacheError.incompatiblePayload("payload is '\(h.kind)', not a CSR cache") }
            let model = codec.dictionary.model
            guard h.headDim == model.headDim, h.headDim == rope.headDim, h.kvHeads == model.kvHeads,
                  h.layers.upperBound <= model.layerCount, !h.keysRotated
            else {
                throw KVCacheError.incompatiblePayload(
                    "payload has \(h.kvHeads) heads of \(h.headDim) for layers \(h.layers), the dictionary's model \(model.kvHeads) of \(model.headDim) for \(model.layerCount) layers")
            }
            guard h.tokenCount <= capacity else { throw KVCacheError.full(layer: h.layers.lowerBound, capacity: capacity, needed: h.tokenCount) }
            do {
                try readStamp(&r, codec: codec)
                let cache = codec.makeCache(
                    geometry: KVCacheGeometry(layers: h.layers, kvHeads: h.kvHeads, headDim: h.headDim, capacity: capacity),
                    rope: rope)
                for s in 0..<h.layers.count {
                    for stream in [cache.keyStreams[s], cache.valueStreams[s]] {
                        let m = stream.m, rows = h.tokenCount * h.kvHeads * h.headDim / m, p = stream.sparsity
                        let online = Int(try r.read(UInt32.self, "online atom count"))
                        guard online <= stream.onlineBudget else {
                            throw KVCacheError.malformedPayload("\(online) online atoms, the settings allow \(stream.onlineBudget)")
                        }
                        try stream.setOnlineAtoms(try r.readArray(UInt16.self, count: online * m, "online atoms"))
                        stream.indexBytes = try r.readArray(UInt8.self, count: (rows * p * stream.width + 7) / 8, "indices")
                        let f16 = stream.format == .float16
                        stream.coefficients16 = try r.readArray(UInt16.self, count: f16 ? rows * p : 0, "coefficients")
                        stream.coefficients8 = try r.readArray(Int8.self, count: f16 ? 0 : rows * p, "coefficients")
                        stream.scales = try r.readArray(UInt16.self, count: f16 ? 0 : rows, "scales")
                        try checkIndices(stream, rows: rows)
                        let guards = Int(try r.read(UInt32.self, "guard count"))
                        guard guards <= rows else { throw KVCacheError.malformedPayload("\(guards) guard rows for \(rows) rows") }
                        stream.guardRows = try r.readArray(UInt32.self, count: guards, "guard rows")
                        guard zip(stream.guardRows, stream.guardRows.dropFirst()).allSatisfy({ $0 < $1 }),
                              stream.guardRows.allSatisfy({ Int($0) < rows })
                        else { throw KVCacheError.malformedPayload("guard rows out of order or range") }
                        stream.guardValues = try r.readArray(UInt16.self, count: guards * m, "guard values")
                        stream.rows = rows
                    }
                }
                guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
                for s in cache.counts.indices { cache.counts[s] = h.tokenCount }
                return cache
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
        }
    }

    /// The dictionary hash and settings a CSR payload names: they must be `codec`'s.
    static func readStamp(_ r: inout BinaryReader, codec: CSRCodec) throws {
        let hash = try r.readString("dictionary hash", maxLength: 128)
        guard hash == codec.dictionary.contentHash else {
            throw CSRError.dictionaryHashMismatch(payload: hash, local: codec.dictionary.contentHash)
        }
        let settings = try r.readString("settings", maxLength: 256)
        guard settings == codec.settings.description else {
            throw KVCacheError.incompatiblePayload("payload coded with \(settings), this process uses \(codec.settings)")
        }
    }

    /// Every packed index must name an atom the stream has, and the unused high bits of
    /// the last byte must be zero (appends OR into them).
    private static func checkIndices(_ stream: CSRCodeStream, rows: Int) throws {
        let atoms = stream.offline.atomCount + stream.onlineCount, w = stream.width, count = rows * stream.sparsity
        guard w > 0 else { return }
        let found = stream.indexBytes.withUnsafeBufferPointer { ib in
            (0..<count).first { CSRCodeStream.readIndex(ib.baseAddress!, $0, width: w) >= atoms }
                .map { CSRCodeStream.readIndex(ib.baseAddress!, $0, width: w) }
        }
        if let j = found { throw KVCacheError.malformedPayload("index \(j) names no atom (\(atoms) atoms)") }
        let bit = count * w
        if bit % 8 != 0, let last = stream.indexBytes.last, last >> UInt8(bit % 8) != 0 {
            throw KVCacheError.malformedPayload("stray bits after the last index")
        }
    }
}
