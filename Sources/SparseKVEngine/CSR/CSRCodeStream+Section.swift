import SparseCoding

/// The stored and transferred form of a run of rows (a "section"), shared by the full
/// transfer (`CSRCache.serialize`) and the append payload:
///
/// 1. with error-targeted pursuit, each row's pair count, packed to ``countWidth`` bits;
/// 2. the indices of the pairs used, row after row: packed to `width` bits; or with
///    entropy coding a u32 byte count, the rANS stream of symbols (an offline atom's
///    index, or the escape symbol N for an online atom) and the online atoms' offsets
///    after N packed to ``escapeWidth`` bits; or with gap coding (rows in ascending atom
///    order) a u32 byte count, the u8 Rice parameter and the Rice-coded gaps (`GapCoding`);
/// 3. the coefficients of the pairs used: fp16, or int8 (with `coef=iN`, N < 8, offset by
///    2^(N-1) - 1 and packed to N bits) then the fp16 scale of every row that uses a pair;
///    with coefficient coding (`ec=...+coef`) a u8 mode first: 0, that fixed-width form; 1,
///    a u32 byte count and a `CoefficientCoding` block of the same coefficients and scales;
/// 4. the guard bank among the rows: u32 count, u32 rows relative to the first, fp16 values.
///
/// With fixed sparsity and no entropy coding this is the memory layout as is.
extension CSRCodeStream {
    /// The coded indices of some rows: the rANS stream and the packed escape offsets, or
    /// the gap-coded stream and its Rice parameter.
    struct CodedIndices {
        let bytes: [UInt8]
        let escapes: [UInt8]
        var parameter = 0
    }

    /// Bits of a stored pair count (0 ... sparsity).
    var countWidth: Int { CSRCodec.indexWidth(atoms: sparsity + 1) }
    /// Bits of an online atom's offset after the escape symbol.
    var escapeWidth: Int { CSRCodec.indexWidth(atoms: onlineBudget) }

    /// Every byte of session state in its stored form: online atoms, the section of all
    /// rows (its guard count excepted, framing as the online atom count is). This is what
    /// a transfer carries and what bits per channel count.
    var byteCount: Int {
        let used = (0..<rows).reduce(0) { $0 + pairCount($1) }
        var bytes = onlineAtoms.count * 2 + guardRows.count * 4 + guardValues.count * 2
        if errorBudget != nil { bytes += BitPacking.byteCount(count: rows, width: countWidth) }
        if entropyTable != nil {
            let coded = codedIndices()
            bytes += 4 + coded.bytes.count + coded.escapes.count
        } else if gapCoded {
            bytes += 5 + GapCoding.byteCount(bits: gapCodedBits())
        } else {
            bytes += BitPacking.byteCount(count: used, width: width)
        }
        switch format {
        case .float16: bytes += used * 2
        case .int8:
            let nonEmpty = (0..<rows).reduce(0) { $0 + (pairCount($1) > 0 ? 1 : 0) }
            bytes += coefficientSection(used: used, scales: nonEmpty, counts: coefficientCoded ? talliedCoefficients() : nil).bytes
        }
        return bytes
    }

    /// Stored bytes of a section's int8 coefficients (`used` of them) and scales: fixed
    /// width; or with coefficient coding (`counts` given) a mode byte and, where it is
    /// smaller, the coded block and its u32 length (`coded`) instead. A section of a few
    /// rows, whose code tables outweigh their codes, stays fixed-width.
    func coefficientSection(used: Int, scales: Int, counts: CoefficientCoding.Counts?) -> (bytes: Int, coded: Bool) {
        let fixed = storedCoefficientBytes(used) + 2 * scales
        guard let counts else { return (fixed, false) }
        let coded = 4 + CoefficientCoding.byteCount(counts)
        return (1 + min(fixed, coded), coded < fixed)
    }

    /// The int8 coefficients and scales of the pairs and rows `rows` use, as a section
    /// stores them.
    func usedCoefficients(_ rows: Range<Int>) -> (coefficients: [Int8], scales: [UInt16]) {
        let p = sparsity
        return (rows.flatMap { r in coefficients8[r * p..<r * p + pairCount(r)] }, rows.filter { pairCount($0) > 0 }.map { scales[$0] })
    }

    /// Symbol counts of all rows' coefficients and scales (what ``CoefficientCoding``'s
    /// block size depends on), counting only the rows added since the last call, as
    /// ``gapCodedBits()`` does.
    func talliedCoefficients() -> CoefficientCoding.Counts {
        if tallyRows > rows { coefficientTally = nil }  // counted rows since cut: count again
        var tally = coefficientTally ?? CoefficientCoding.Counts(levels: Int(coefficientLevels))
        let from = coefficientTally == nil ? 0 : tallyRows
        if from < rows {
            let (q, sc) = usedCoefficients(from..<rows)
            tally.add(coefficients: q)
            for x in sc { tally.add(scale: x) }
        }
        (coefficientTally, tallyRows) = (tally, rows)
        return tally
    }

    /// Stored bytes of `count` int8 coefficients: one each, or packed to `coefficientBits`.
    func storedCoefficientBytes(_ count: Int) -> Int {
        coefficientBits == 8 ? count : BitPacking.byteCount(count: count, width: coefficientBits)
    }

    /// int8 coefficients in their stored form: as they are, or below 8 bits offset by the
    /// level count L (0 ... 2L) and packed.
    func storedCoefficients(_ q: [Int8]) -> [UInt8] {
        guard coefficientBits < 8 else { return q.map { UInt8(bitPattern: $0) } }
        let offset = Int(coefficientLevels)
        return Self.packed(q.map { UInt16(Int($0) + offset) }, width: coefficientBits)
    }

    /// Reads `count` coefficients written by ``storedCoefficients(_:)``, refusing codes
    /// outside -L ... L.
    func readCoefficients(count: Int, from r: inout BinaryReader) throws -> [Int8] {
        guard coefficientBits < 8 else { return try r.readArray(Int8.self, count: count, "coefficients") }
        let bytes = try r.readArray(UInt8.self, count: storedCoefficientBytes(count), "coefficients")
        let offset = Int(coefficientLevels)
        let raw = try Self.unpacked(bytes, count: count, width: coefficientBits, what: "coefficient")
        guard raw.allSatisfy({ Int($0) <= 2 * offset }) else {
            throw KVCacheError.malformedPayload("a \(coefficientBits)-bit coefficient above \(offset)")
        }
        return raw.map { Int8(Int($0) - offset) }
    }

    /// The atom indices of the pairs rows `rows` use, in order.
    func usedIndices(_ rows: Range<Int>) -> [UInt16] {
        var out: [UInt16] = []
        out.reserveCapacity(rows.count * sparsity)
        indexBytes.withUnsafeBufferPointer { ib in
            guard let ip = ib.baseAddress else { return }
            for r in rows {
                for k in 0..<pairCount(r) { out.append(UInt16(Self.readIndex(ip, r * sparsity + k, width: width))) }
            }
        }
        return out
    }

    /// Bits of all rows' gap codes at the best parameter (what ``codedIndices()`` codes),
    /// counting only the rows added since the last call.
    func gapCodedBits() -> Int {
        if gapBitRows < rows {
            let added = gapBitRows..<rows
            let gaps = GapCoding.gaps(usedIndices(added), rowCounts: added.map(pairCount))
            for k in gapBits.indices { gapBits[k] += GapCoding.bitCount(gaps, parameter: k) }
            gapBitRows = rows
        }
        return gapBits.min() ?? 0
    }

    /// All rows' indices rANS- or gap-coded (cached until the stream changes).
    func codedIndices() -> CodedIndices {
        if let c = codedIndexCache { return c }
        let c = code(0..<rows)
        codedIndexCache = c
        return c
    }

    private func code(_ rows: Range<Int>) -> CodedIndices {
        let indices = usedIndices(rows)
        if gapCoded {
            let gaps = GapCoding.gaps(indices, rowCounts: rows.map(pairCount))
            let k = GapCoding.bestParameter(gaps).parameter
            return CodedIndices(bytes: GapCoding.encode(gaps, parameter: k), escapes: [], parameter: k)
        }
        guard let table = entropyTable else { return CodedIndices(bytes: [], escapes: []) }
        let n = offline.atomCount
        let symbols = indices.map { min(Int($0), n) }
        let escapes = indices.filter { Int($0) >= n }.map { $0 - UInt16(n) }
        // Symbols are below N + 1 = the table's size (checked when the codec was made).
        let bytes = (try? RANSCoder.encode(symbols, table: table)) ?? []
        return CodedIndices(bytes: bytes, escapes: Self.packed(escapes, width: escapeWidth))
    }

    static func packed(_ values: [UInt16], width: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: BitPacking.byteCount(count: values.count, width: width))
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBufferPointer { o in
                guard let vp = v.baseAddress, let op = o.baseAddress else { return }
                BitPacking.pack(vp, count: values.count, width: width, into: op)
            }
        }
        return out
    }

    /// `count` values of `width` bits; the unused high bits of the last byte must be 0.
    static func unpacked(_ bytes: [UInt8], count: Int, width: Int, what: String) throws -> [UInt16] {
        var out = [UInt16](repeating: 0, count: count)
        guard width > 0, count > 0 else { return out }
        bytes.withUnsafeBufferPointer { b in
            out.withUnsafeMutableBufferPointer { o in
                BitPacking.unpack(b.baseAddress!, first: 0, count: count, width: width, into: o.baseAddress!)
            }
        }
        let bit = count * width
        if bit % 8 != 0, let last = bytes.last, last >> UInt8(bit % 8) != 0 {
            throw KVCacheError.malformedPayload("stray bits after the last \(what)")
        }
        return out
    }

    // MARK: - Writing

    /// Rows `rows` as a section (see the extension's documentation).
    func writeRows(_ rows: Range<Int>, to w: inout BinaryWriter) {
        let p = sparsity
        if errorBudget != nil { w.write(array: Self.packed(rows.map { UInt16(pairCounts[$0]) }, width: countWidth)) }
        if entropyTable != nil || gapCoded {
            let coded = rows == 0..<self.rows ? codedIndices() : code(rows)
            w.write(UInt32(coded.bytes.count))
            if gapCoded { w.write(UInt8(coded.parameter)) }
            w.write(array: coded.bytes)
            w.write(array: coded.escapes)
        } else {
            w.write(array: Self.packed(usedIndices(rows), width: width))
        }
        switch format {
        case .float16:
            for r in rows { w.write(array: Array(coefficients16[r * p..<r * p + pairCount(r)])) }
        case .int8:
            let (q, sc) = usedCoefficients(rows)
            if coefficientCoded {
                let levels = Int(coefficientLevels)
                let counts = rows == 0..<self.rows ? talliedCoefficients() : CoefficientCoding.Counts(levels: levels, coefficients: q, scales: sc)
                let coded = coefficientSection(used: q.count, scales: sc.count, counts: counts).coded
                w.write(UInt8(coded ? 1 : 0))
                if coded {
                    let block = CoefficientCoding.encode(q, levels: levels, scales: sc)
                    w.write(UInt32(block.count))
                    w.write(array: block)
                    break
                }
            }
            w.write(array: storedCoefficients(q))
            w.write(array: sc)
        }
        let guarded = guardRows.indices.filter { rows.contains(Int(guardRows[$0])) }
        w.write(UInt32(guarded.count))
        w.write(array: guarded.map { guardRows[$0] - UInt32(rows.lowerBound) })
        for i in guarded { w.write(array: Array(guardValues[i * m..<(i + 1) * m])) }
    }

    // MARK: - Reading

    /// Reads a section of `count` rows and appends them, checking every length, that every
    /// index is below `atomLimit` and the guard rows ascend within the section.
    func readRows(count n: Int, from r: inout BinaryReader, atomLimit: Int) throws {
        let p = sparsity
        var counts = [Int](repeating: p, count: n)
        if errorBudget != nil {
            let bytes = try r.readArray(UInt8.self, count: BitPacking.byteCount(count: n, width: countWidth), "pair counts")
            counts = try Self.unpacked(bytes, count: n, width: countWidth, what: "pair count").map(Int.init)
            if let bad = counts.first(where: { $0 > p }) { throw KVCacheError.malformedPayload("a row with \(bad) pairs, the cap is \(p)") }
        }
        let used = counts.reduce(0, +)
        var indices: [UInt16]
        if let table = entropyTable {
            let length = Int(try r.read(UInt32.self, "coded index length"))
            guard length <= r.remaining else { throw KVCacheError.malformedPayload("coded indices of \(length) bytes, \(r.remaining) left") }
            let bytes = try r.readArray(UInt8.self, count: length, "coded indices")
            let symbols: [Int]
            do { symbols = try RANSCoder.decode(bytes, count: used, table: table) } catch let e as EntropyCodingError {
                throw KVCacheError.malformedPayload(e.localizedDescription)
            }
            let n0 = offline.atomCount, escapes = symbols.reduce(0) { $0 + ($1 == n0 ? 1 : 0) }
            let raw = try r.readArray(UInt8.self, count: BitPacking.byteCount(count: escapes, width: escapeWidth), "online offsets")
            var offsets = try Self.unpacked(raw, count: escapes, width: escapeWidth, what: "online offset").makeIterator()
            indices = symbols.map { $0 < n0 ? UInt16($0) : UInt16(n0) + (offsets.next() ?? 0) }
        } else if gapCoded {
            let length = Int(try r.read(UInt32.self, "gap-coded index length"))
            let k = Int(try r.read(UInt8.self, "Rice parameter"))
            guard length <= r.remaining else { throw KVCacheError.malformedPayload("gap-coded indices of \(length) bytes, \(r.remaining) left") }
            let bytes = try r.readRaw(length, "gap-coded indices")
            do { indices = try GapCoding.decode(bytes, rowCounts: counts, parameter: k, limit: atomLimit) } catch let e as EntropyCodingError {
                throw KVCacheError.malformedPayload(e.localizedDescription)
            }
        } else {
            let bytes = try r.readArray(UInt8.self, count: BitPacking.byteCount(count: used, width: width), "indices")
            indices = try Self.unpacked(bytes, count: used, width: width, what: "index")
        }
        if let j = indices.first(where: { Int($0) >= atomLimit }) {
            throw KVCacheError.malformedPayload("index \(j) names no atom (\(atomLimit) atoms)")
        }
        let nonEmpty = counts.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
        let c16 = try r.readArray(UInt16.self, count: format == .float16 ? used : 0, "coefficients")
        var c8: [Int8], sc: [UInt16]
        let mode = format == .int8 && coefficientCoded ? try r.read(UInt8.self, "coefficient mode") : 0
        guard mode <= 1 else { throw KVCacheError.malformedPayload("coefficient mode \(mode)") }
        if mode == 1 {
            let length = Int(try r.read(UInt32.self, "coded coefficient length"))
            guard length <= r.remaining else { throw KVCacheError.malformedPayload("coded coefficients of \(length) bytes, \(r.remaining) left") }
            let block = try r.readRaw(length, "coded coefficients")
            do {
                (c8, sc) = try CoefficientCoding.decode(block, count: used, scaleCount: nonEmpty, levels: Int(coefficientLevels))
            } catch let e as EntropyCodingError {
                throw KVCacheError.malformedPayload(e.localizedDescription)
            }
        } else {
            c8 = try readCoefficients(count: format == .int8 ? used : 0, from: &r)
            sc = try r.readArray(UInt16.self, count: format == .int8 ? nonEmpty : 0, "scales")
        }
        let guards = Int(try r.read(UInt32.self, "guard count"))
        guard guards <= n else { throw KVCacheError.malformedPayload("\(guards) guard rows for \(n) rows") }
        let gRows = try r.readArray(UInt32.self, count: guards, "guard rows")
        guard zip(gRows, gRows.dropFirst()).allSatisfy({ $0 < $1 }), gRows.allSatisfy({ Int($0) < n }) else {
            throw KVCacheError.malformedPayload("guard rows out of order or range")
        }
        let gValues = try r.readArray(UInt16.self, count: guards * m, "guard values")

        // Expand to the fixed-width memory layout.
        var padded = [UInt16](repeating: 0, count: n * p)
        var at = 0, scaleAt = 0
        for row in 0..<n {
            for k in 0..<counts[row] { padded[row * p + k] = indices[at + k] }
            switch format {
            case .float16:
                coefficients16 += c16[at..<at + counts[row]]
                coefficients16 += repeatElement(0, count: p - counts[row])
            case .int8:
                coefficients8 += c8[at..<at + counts[row]]
                coefficients8 += repeatElement(0, count: p - counts[row])
                scales.append(counts[row] > 0 ? sc[scaleAt] : 0)
                if counts[row] > 0 { scaleAt += 1 }
            }
            at += counts[row]
        }
        if errorBudget != nil { pairCounts += counts.map { UInt8($0) } }
        appendIndices(padded)
        guardRows += gRows.map { $0 + UInt32(rows) }
        guardValues += gValues
        rows += n
        codedIndexCache = nil
    }
}
