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
    /// One stream's share of an append payload, parsed and checked.
    private struct StreamRows {
        var rows: Int
        var indices: [UInt16]
        var coefficients16: [UInt16]
        var coefficients8: [Int8]
        var scales: [UInt16]
        /// Relative to the payload's first row.
        var guardRows: [UInt32]
        var guardValues: [UInt16]

        /// The rows after the first `k` (which the stream holds already).
        func droppingFirst(_ k: Int, sparsity p: Int, m: Int) -> StreamRows {
            guard k > 0 else { return self }
            let g = guardRows.firstIndex { Int($0) >= k } ?? guardRows.count
            return StreamRows(rows: rows - k, indices: Array(indices.dropFirst(k * p)),
                              coefficients16: Array(coefficients16.dropFirst(k * p)), coefficients8: Array(coefficients8.dropFirst(k * p)),
                              scales: Array(scales.dropFirst(k)), guardRows: guardRows[g...].map { $0 - UInt32(k) },
                              guardValues: Array(guardValues.dropFirst(g * m)))
        }
    }

    @discardableResult
    public func applyAppendPayload(_ bytes: [UInt8]) throws -> (first: Int, tokens: Int) {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let (h, first) = try readAppendHeader(&r, kind: kind, keysRotated: false)
            var parsed: [StreamRows] = []
            var recent: [(first: Int, count: Int, keys: [Float16], values: [Float16])] = []
            let codes: Range<Int>
            do {
                try Self.readStamp(&r, codec: codec)
                codes = try Self.readCodedSpan(&r, settings: codec.settings, first: first, tokens: h.tokenCount)
                for layer in h.layers {
                    let s = layer - geometry.layers.lowerBound
                    for stream in [keyStreams[s], valueStreams[s]] {
                        parsed.append(try Self.readRows(&r, stream: stream, rows: codes.count * geometry.rowWidth / stream.m))
                    }
                    if codec.settings.recentTokens > 0 {
                        recent.append(try Self.readRecentRows(&r, settings: codec.settings, width: geometry.rowWidth,
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
                    Self.append(parsed[k].droppingFirst(skip, sparsity: stream.sparsity, m: stream.m), to: stream)
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

    /// Reads `rows` rows of `stream`'s layout, checking every index against the atoms the
    /// stream holds and every guard row against the rows.
    private static func readRows(_ r: inout BinaryReader, stream: CSRCodeStream, rows: Int) throws -> StreamRows {
        let p = stream.sparsity, w = stream.width, count = rows * p
        let packed = try r.readArray(UInt8.self, count: (count * w + 7) / 8, "indices")
        let atoms = stream.offline.atomCount + stream.onlineCount
        var indices = [UInt16](repeating: 0, count: count)
        if w > 0 {
            try packed.withUnsafeBufferPointer { pb in
                for i in 0..<count {
                    let j = CSRCodeStream.readIndex(pb.baseAddress!, i, width: w)
                    guard j < atoms else { throw KVCacheError.malformedPayload("index \(j) names no atom (\(atoms) atoms)") }
                    indices[i] = UInt16(j)
                }
            }
        }
        let f16 = stream.format == .float16
        let c16 = try r.readArray(UInt16.self, count: f16 ? count : 0, "coefficients")
        let c8 = try stream.readCoefficients(count: f16 ? 0 : count, from: &r)
        let scales = try r.readArray(UInt16.self, count: f16 ? 0 : rows, "scales")
        let guards = Int(try r.read(UInt32.self, "guard count"))
        guard guards <= rows else { throw KVCacheError.malformedPayload("\(guards) guard rows for \(rows) rows") }
        let guardRows = try r.readArray(UInt32.self, count: guards, "guard rows")
        guard zip(guardRows, guardRows.dropFirst()).allSatisfy({ $0 < $1 }), guardRows.allSatisfy({ Int($0) < rows }) else {
            throw KVCacheError.malformedPayload("guard rows out of order or range")
        }
        let guardValues = try r.readArray(UInt16.self, count: guards * stream.m, "guard values")
        return StreamRows(rows: rows, indices: indices, coefficients16: c16, coefficients8: c8, scales: scales, guardRows: guardRows,
                          guardValues: guardValues)
    }

    /// Appends rows coded elsewhere to `stream`, stored as its own append stores them.
    private static func append(_ x: StreamRows, to stream: CSRCodeStream) {
        let first = stream.rows
        stream.appendIndices(x.indices)
        stream.coefficients16 += x.coefficients16
        stream.coefficients8 += x.coefficients8
        stream.scales += x.scales
        stream.guardRows += x.guardRows.map { $0 + UInt32(first) }
        stream.guardValues += x.guardValues
        stream.rows = first + x.rows
    }
}
