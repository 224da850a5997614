import SparseCoding

/// The CSR transfer format: the common ``KVPayloadHeader`` (kind "csr", keys not
/// rotated), the content hash of the dictionary the codes refer to, the settings that fix
/// the layout (with `ec=rans`, then the entropy tables' hash); with `recent=W`, u32 the
/// tokens coded (every layer's); then per layer the key stream and the value stream: u32
/// online atom count, online atoms (fp16), and the section of the coded tokens' rows
/// (`CSRCodeStream.writeRows`: pair counts, indices, coefficients, guard bank); with
/// `recent=W`, then the buffer's rows (the tokens not coded): u32 count (at most W), fp16
/// keys, fp16 values. A receiver refuses codes made against another
/// dictionary or with other settings, and checks every length against the header.
extension CSRCache {
    /// The format of CSR caches: codes over the dictionary whose hash they carry, decoded
    /// only with the process's codec for that dictionary.
    public static let format = KVCacheFormat(
        kind: "csr", needsDictionary: true, supportsReplica: true,
        decode: { payload, capacity, rope, codec in
            guard let codec else { throw CSRError.dictionaryRequired }
            return try CSRCache.deserialize(payload, capacity: capacity, rope: rope, codec: codec)
        },
        checkAppend: { payload, codec in
            guard let codec else { throw CSRError.dictionaryRequired }
            return try CSRCache.checkAppendPayload(payload, codec: codec)
        })

    public func serialize(layers: Range<Int>) throws -> [UInt8] {
        let n = try transferTokenCount(layers: layers)
        var w = BinaryWriter(capacity: 256 + layers.reduce(0) { $0 + byteCount(layer: $1) } + 32 * layers.count)
        KVPayloadHeader(kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
                        tokenCount: n, keysRotated: false).write(to: &w)
        writeStamp(to: &w)
        if codec.settings.recentTokens > 0 { w.write(UInt32(try codedTokens(layers: layers))) }
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for stream in [keyStreams[s], valueStreams[s]] {
                w.write(UInt32(stream.onlineCount))
                w.write(array: stream.onlineAtoms)
                stream.writeRows(0..<stream.rows, to: &w)
            }
            if codec.settings.recentTokens > 0 { writeRecentRows(layer: s, tokens: 0..<n, to: &w) }
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
            guard h.kind == Self.format.kind else { throw KVCacheError.incompatiblePayload("payload is '\(h.kind)', not a CSR cache") }
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
                var coded = h.tokenCount
                if codec.settings.recentTokens > 0 {
                    coded = Int(try r.read(UInt32.self, "coded tokens"))
                    guard coded <= h.tokenCount, coded + codec.settings.recentTokens >= h.tokenCount else {
                        throw KVCacheError.malformedPayload("\(coded) of \(h.tokenCount) tokens coded with recent=\(codec.settings.recentTokens)")
                    }
                }
                let cache = codec.makeCache(
                    geometry: KVCacheGeometry(layers: h.layers, kvHeads: h.kvHeads, headDim: h.headDim, capacity: capacity),
                    rope: rope)
                for s in 0..<h.layers.count {
                    for stream in [cache.keyStreams[s], cache.valueStreams[s]] {
                        let m = stream.m, rows = coded * h.kvHeads * h.headDim / m
                        let online = Int(try r.read(UInt32.self, "online atom count"))
                        guard online <= stream.onlineBudget else {
                            throw KVCacheError.malformedPayload("\(online) online atoms, the settings allow \(stream.onlineBudget)")
                        }
                        try stream.setOnlineAtoms(try r.readArray(UInt16.self, count: online * m, "online atoms"))
                        try stream.readRows(count: rows, from: &r, atomLimit: stream.offline.atomCount + stream.onlineCount)
                    }
                    if codec.settings.recentTokens > 0 {
                        let x = try readRecentRows(&r, settings: codec.settings, width: h.kvHeads * h.headDim, headDim: h.headDim, tokens: h.tokenCount,
                                                   end: h.tokenCount, codedEnd: coded)
                        cache.takeRecentRows(layer: s, first: x.first, count: x.count, keys: x.keys, values: x.values)
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

    /// Tokens coded in every layer of `layers` (they are appended alike).
    func codedTokens(layers: Range<Int>) throws -> Int {
        let first = codedTokens(layers.lowerBound - geometry.layers.lowerBound)
        for layer in layers where codedTokens(layer - geometry.layers.lowerBound) != first {
            throw KVCacheError.incompatiblePayload("layer \(layer) holds codes of \(codedTokens(layer - geometry.layers.lowerBound)) tokens, layer \(layers.lowerBound) of \(first)")
        }
        return first
    }

    /// The dictionary hash and settings (and, entropy-coded, the tables' hash) a CSR
    /// payload names: they must be `codec`'s.
    static func readStamp(_ r: inout BinaryReader, codec: CSRCodec) throws {
        let hash = try r.readString("dictionary hash", maxLength: 128)
        guard hash == codec.dictionary.contentHash else {
            throw CSRError.dictionaryHashMismatch(payload: hash, local: codec.dictionary.contentHash)
        }
        let settings = try r.readString("settings", maxLength: CSRSettings.maxDescriptionLength)
        guard settings == codec.settings.description else {
            throw KVCacheError.incompatiblePayload("payload coded with \(settings), this process uses \(codec.settings)")
        }
        if codec.settings.entropyCoded {
            let tables = try r.readString("entropy tables hash", maxLength: 128)
            guard tables == codec.dictionary.entropyTables?.contentHash else {
                throw KVCacheError.incompatiblePayload("indices coded with entropy tables \(tables.prefix(16))…, this process holds \(codec.dictionary.entropyTables?.contentHash.prefix(16) ?? "none")")
            }
        }
    }

    func writeStamp(to w: inout BinaryWriter) {
        w.write(codec.dictionary.contentHash)
        w.write(codec.settings.description)
        if codec.settings.entropyCoded { w.write(codec.dictionary.entropyTables?.contentHash ?? "") }
    }
}
