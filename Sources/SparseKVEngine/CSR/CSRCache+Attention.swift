import CShims
import SparseCoding

/// Fused attention on CSR codes.
///
/// Keys: a block of positions is decoded from its (index, coefficient) pairs into a small
/// scratch (guard rows and the latest append's exact rows override their codes) and
/// rotated from the precomputed RoPE table, then dotted with the queries.
///
/// Values, when decoding a few tokens, stay in the sparse domain: each position adds its
/// attention weight times its coefficients into one accumulator per atom,
/// acc[atom] += a_t * c_t, and one dictionary product per head and chunk at the end turns
/// the accumulators into channels. A position costs s multiply-adds per query row instead
/// of decoding m channels. Guarded and exact rows are added in channel space.
extension CSRCache {
    public func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                       into out: UnsafeMutablePointer<Float>) throws {
        try attend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out, beside: nil)
    }

    /// A decode step's pursuit runs beside its attention: the step's new rows are read
    /// exactly (the latest append's exact rows), so the attention does not read their codes,
    /// which are stored once both are done. The same codes and the same attention as
    /// ``append(layer:keys:values:count:)`` then ``attend(layer:queries:count:heads:scale:into:)``.
    /// Other appends (a batch, one thread, a `recent=` buffer, online atoms still to choose)
    /// make the two calls.
    public func appendAndAttend(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, count n: Int,
                                queries: UnsafePointer<Float>, heads: Int, scale: Float, into out: UnsafeMutablePointer<Float>) throws {
        try requireLayer(layer)
        let s = layer - geometry.layers.lowerBound, start = counts[s]
        guard n > 0, codec.settings.recentTokens == 0, codesOnThreads(layer: s, tokens: n), start + n <= geometry.capacity else {
            try append(layer: layer, keys: k, values: v, count: n)
            return try attend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
        }
        let width = geometry.rowWidth, keys = keysToCode(layer: s, k, count: n)
        let values = Array(UnsafeBufferPointer(start: v, count: n * width))
        let coding = try DecodeCoding(keyStreams[s], keys: keys, valueStreams[s], values: values)
        let before = pending[s]
        pending[s] = Self.exactRows(keeping: before, from: start + n, width: width, form: bufferForm,
                                    appending: (start, n, keys, values, 0))
        counts[s] = start + n
        do {
            try attend(layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out,
                       beside: .init(count: coding.units, run: coding.run))
            try coding.store()
        } catch {
            (pending[s], counts[s]) = (before, start)
            throw error
        }
    }

    private func attend(layer: Int, queries: UnsafePointer<Float>, count n: Int, heads: Int, scale: Float,
                        into out: UnsafeMutablePointer<Float>, beside: FusedAttention.BesideUnits?) throws {
        try requireLayer(layer)
        let s = layer - geometry.layers.lowerBound
        let ks = keyStreams[s], vs = valueStreams[s], p = pending[s]
        // Nothing here changes while the kernel runs, so the arrays' storage stays put.
        let src = CSRAttentionSource(
            keys: CSRStreamView(ks), values: CSRStreamView(vs), kvHeads: geometry.kvHeads, headDim: geometry.headDim,
            codedPositions: codedTokens(s), pendingStart: p?.start ?? 0, pendingCount: p?.count ?? 0,
            pendingKeys: p.map { storageBase($0.keys) }, pendingValues: p.map { storageBase($0.values) },
            ropeTable: ropeTable.baseAddress, ropeHalf: rope.ropeDimension / 2, splitRopeTable: splitRopeTable?.baseAddress)
        guard let inverse = keyScales?[s].inverse else {
            return withExtendedLifetime((ks, vs, p, ropeTable, splitRopeTable)) {
                fusedAttend(src, layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out, beside: beside)
            }
        }
        // Keys are held as sqrt(w) ⊙ k (CSRKeyMetric): q·R(k) = (q ⊙ w^{-1/2})·R(sqrt(w) ⊙ k).
        let d = geometry.headDim, group = heads / geometry.kvHeads
        var scaled = Array(UnsafeBufferPointer(start: queries, count: n * heads * d))
        for t in 0..<n {
            for j in 0..<heads {
                let row = (t * heads + j) * d, g = j / group * d
                for i in 0..<d { scaled[row + i] *= inverse[g + i] }
            }
        }
        withExtendedLifetime((ks, vs, p, ropeTable, splitRopeTable)) {
            scaled.withUnsafeBufferPointer {
                fusedAttend(src, layer: layer, queries: $0.baseAddress!, count: n, heads: heads, scale: scale, into: out,
                            beside: beside)
            }
        }
    }
}

/// One code stream as raw storage.
struct CSRStreamView {
    let m: Int, sparsity: Int, width: Int
    let int8: Bool
    /// (atomCount, m) offline + online atoms, fp16 (``CSRCodeStream/atomBits``)
    let atoms: UnsafePointer<Float16>
    let atomCount: Int
    let indexBytes: UnsafePointer<UInt8>, indexByteCount: Int
    let coefficients16: UnsafePointer<UInt16>
    let coefficients8: UnsafePointer<Int8>
    let scales: UnsafePointer<UInt16>
    let guardRows: UnsafePointer<UInt32>, guardCount: Int
    let guardValues: UnsafePointer<UInt16>
    /// The fixed-point atoms (``FixedPointAtoms``) when the stream's rows come from them, and 2^-shift.
    let fixed: UnsafePointer<Int16>?
    let unit: Float

    init(_ s: CSRCodeStream) {
        m = s.m
        sparsity = s.sparsity
        width = s.width
        int8 = s.format == .int8
        atoms = UnsafeRawPointer(storageBase(s.atomBits)).assumingMemoryBound(to: Float16.self)
        atomCount = s.atomBits.count / s.m
        indexBytes = storageBase(s.indexBytes)
        indexByteCount = s.indexBytes.count
        coefficients16 = storageBase(s.coefficients16)
        coefficients8 = storageBase(s.coefficients8)
        scales = storageBase(s.scales)
        guardRows = storageBase(s.guardRows)
        guardCount = s.guardRows.count
        guardValues = storageBase(s.guardValues)
        fixed = s.fixedAtoms.map { $0.atoms.baseAddress }
        unit = s.fixedAtoms?.unit ?? 0
    }

    /// The atom indices of rows row0 ..< row0 + n, `sparsity` per row (``unpack`` without
    /// the coefficients): `sparsekv_unpack_indices` (`csr_codes.h`), as the C kernels read them.
    @inline(__always)
    func unpackIndices(rows row0: Int, count n: Int, into o: UnsafeMutablePointer<Int32>) {
        sparsekv_unpack_indices(indexBytes, indexByteCount, width, row0 * sparsity, n * sparsity, o)
    }

    /// binary16 bits to Float: one `vcvtph2ps` with F16C (the shared `HalfPrecision.float`
    /// lives in another module and is not inlined across it).
    @inline(__always)
    static func half(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    /// The pairs of rows row0 ..< row0 + n unpacked for the decode loops: atom indices and
    /// weights (a coefficient times its row's scale, the product the decode has always
    /// used), `sparsity` per row. Unpacking a block first keeps the bit extraction and the
    /// coefficient conversions out of the loop that gathers atom rows.
    @inline(__always)
    func unpack(rows row0: Int, count n: Int, indices o: UnsafeMutablePointer<Int32>, weights w: UnsafeMutablePointer<Float>) {
        let s = sparsity, first = row0 * s, total = n * s
        unpackIndices(rows: row0, count: n, into: o)
        if int8 {
            for r in 0..<n {
                let scale = Self.half(scales[row0 + r]), q = coefficients8 + first + r * s, wr = w + r * s
                for k in 0..<s { wr[k] = Float(q[k]) * scale }
            }
        } else {
            let q = coefficients16 + first
            for k in 0..<total { w[k] = Self.half(q[k]) }
        }
    }

    /// One row (m floats) from its unpacked pairs, ignoring the guard bank; the sum stays
    /// in registers over the pairs for m = 32 or 64.
    @inline(__always)
    func combine(indices o: UnsafePointer<Int32>, weights w: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        Kernels.sumOfHalfRows(count: sparsity, dim: m, weights: w, rows: atoms, indices: o, into: out, fromZero: true)
    }

    /// The first guard entry at or after `row` (binary search).
    func firstGuard(atOrAfter row: Int) -> Int {
        var lo = 0, hi = guardCount
        while lo < hi {
            let mid = (lo + hi) / 2
            if Int(guardRows[mid]) < row { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Guard entry g's m values into `out`.
    @inline(__always)
    func copyGuard(_ g: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<m { out[i] = Self.half(guardValues[g * m + i]) }
    }
}

struct CSRAttentionSource: AttentionSource {
    let keys: CSRStreamView
    let values: CSRStreamView
    let kvHeads: Int
    let headDim: Int
    /// Positions the streams hold codes for (the rest, a `recent=` buffer's, only the
    /// pending rows hold).
    let codedPositions: Int
    /// The latest append's exact rows (pre-RoPE keys), (pendingCount, kvHeads * d) each.
    let pendingStart: Int, pendingCount: Int
    let pendingKeys: UnsafePointer<Float>?, pendingValues: UnsafePointer<Float>?
    /// (capacity, half, 2) cos, sin
    let ropeTable: UnsafePointer<Float>
    let ropeHalf: Int
    /// (capacity, 64) the table in split order (`csr_keys.h`), for the fixed-point key kernels
    let splitRopeTable: UnsafePointer<Float>?

    /// Runs `body(b0, b1, indices, weights)` on blocks of at most `blockPositions` positions
    /// of lo ..< hi, head g, with the pairs of each block unpacked (position t's chunks at
    /// (t - b0) * chunks * sparsity).
    @inline(__always)
    private func forEachUnpackedBlock(_ v: CSRStreamView, head g: Int, _ lo: Int, _ hi: Int,
                                      _ body: (Int, Int, UnsafePointer<Int32>, UnsafePointer<Float>) -> Void) {
        let chunks = headDim / v.m, perPosition = chunks * v.sparsity, block = FusedAttention.blockPositions
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: block * perPosition) { ib in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: block * perPosition) { wb in
                let idx = ib.baseAddress!, w = wb.baseAddress!
                var b0 = lo
                while b0 < hi {
                    let b1 = min(hi, b0 + block)
                    for t in b0..<b1 {
                        v.unpack(rows: (t * kvHeads + g) * chunks, count: chunks, indices: idx + (t - b0) * perPosition,
                                 weights: w + (t - b0) * perPosition)
                    }
                    body(b0, b1, idx, w)
                    b0 = b1
                }
            }
        }
    }

    /// Positions lo ..< hi of head g of `stream`, decoded into out (hi - lo, d), exact where
    /// the guard bank or the pending rows say so. Codes are unpacked and combined a block
    /// of positions at a time; guarded and pending rows are then written over.
    private func decode(_ v: CSRStreamView, exact: UnsafePointer<Float>?, head g: Int, _ lo: Int, _ hi: Int,
                        into out: UnsafeMutablePointer<Float>) {
        let d = headDim, m = v.m, chunks = d / m, s = v.sparsity
        forEachUnpackedBlock(v, head: g, lo, max(lo, min(hi, codedPositions))) { b0, b1, idx, w in
            if let fixed = v.fixed {
                // Fixed-point keys: row by row, as rows of one position's chunks are adjacent only.
                for t in b0..<b1 {
                    let row0 = (t * kvHeads + g) * chunks
                    CSRKeyKernels.rows(fixed, m: m, sparsity: s, indices: idx + (t - b0) * chunks * s,
                                       coefficients: v.coefficients8 + row0 * s, scales: v.scales + row0, unit: v.unit,
                                       count: chunks, into: out + (t - lo) * d)
                }
                return
            }
            for j in 0..<(b1 - b0) * chunks {
                v.combine(indices: idx + j * s, weights: w + j * s, into: out + (b0 - lo) * d + j * m)
            }
        }
        // Guard rows of this head in lo ..< hi, then the latest append's exact rows.
        var gi = v.firstGuard(atOrAfter: lo * kvHeads * chunks)
        let end = hi * kvHeads * chunks
        while gi < v.guardCount && Int(v.guardRows[gi]) < end {
            let row = Int(v.guardRows[gi]), c = row % chunks, position = row / chunks
            if position % kvHeads == g { v.copyGuard(gi, into: out + (position / kvHeads - lo) * d + c * m) }
            gi += 1
        }
        let from = max(lo, pendingStart), to = min(hi, pendingStart + pendingCount)
        if let exact, from < to {
            for t in from..<to {
                (out + (t - lo) * d).update(from: exact + (t - pendingStart) * kvHeads * d + g * d, count: d)
            }
        }
    }

    func keys(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        decode(keys, exact: pendingKeys, head: g, lo, hi, into: scratch)
        for t in lo..<hi { Self.rotate(scratch + (t - lo) * headDim, table: ropeTable + t * ropeHalf * 2, pairs: ropeHalf) }
        return UnsafePointer(scratch)
    }

    // MARK: - Keys scored from their codes

    /// Whether ``scores`` can decode a position into registers: 64-channel heads in one or
    /// two chunks, indices of at most 14 bits, at most 32 pairs per chunk.
    private var scoresInRegisters: Bool {
        headDim == 64 && ropeHalf == 32 && (keys.m == 64 || keys.m == 32) && keys.width <= 14 && keys.sparsity <= 32
    }

    /// One pass per position: its pairs are unpacked, its atom rows summed and rotated in
    /// registers and multiplied into one 8-lane partial sum per query row; every eight
    /// positions the partial sums are finished together. Guarded and pending positions are
    /// decoded through ``keys`` into the scratch and then go the same way. The sums, the
    /// rotation and the dot products are the ones ``keys`` and `dots8` do, in the same
    /// order.
    func scores(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>, rows: Int,
                scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int,
                scratch: UnsafeMutablePointer<Float>) {
        if keys.fixed != nil && headDim == 64 && ropeHalf == 32, let splitRopeTable {
            return fixedPointScores(head: g, lo, hi, queries: queries, rows: rows, scale: scale, into: scores,
                                    stride: stride, scratch: scratch, splitRope: splitRopeTable)
        }
        guard scoresInRegisters else {
            return scoresOfDecodedKeys(head: g, lo, hi, queries: queries, rows: rows, scale: scale, into: scores,
                                       stride: stride, scratch: scratch)
        }
        let k = keys, chunks = 64 / k.m, s = k.sparsity, perPosition = chunks * s
        var gi = k.firstGuard(atOrAfter: lo * kvHeads * chunks)
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: perPosition) { ib in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: perPosition) { wb in
                withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: rows * 8) { pb in
                    let idx = ib.baseAddress!, w = wb.baseAddress!, partial = pb.baseAddress!
                    partial.initialize(repeating: SIMD8(), count: rows * 8)
                    var t0 = lo
                    while t0 < hi {
                        let n = min(8, hi - t0)
                        for j in 0..<n {
                            let t = t0 + j, row0 = (t * kvHeads + g) * chunks
                            let x: Row64
                            if readsExactly(t, rows: row0, chunks: chunks, guardIndex: &gi) {
                                x = Row64(loading: keys(head: g, t, t + 1, scratch: scratch))
                            } else {
                                k.unpack(rows: row0, count: chunks, indices: idx, weights: w)
                                x = Row64(summing: k.atoms, m: k.m, sparsity: s, indices: idx, weights: w)
                                    .rotated(by: ropeTable + t * ropeHalf * 2)
                            }
                            for r in 0..<rows { partial[r * 8 + j] = x.partialDot(queries[r]) }
                        }
                        Self.finish(partial, rows: rows, count: n, scale: scale, into: scores + t0 - lo, stride: stride)
                        t0 += n
                    }
                }
            }
        }
    }

    /// Whether the key at position t (rows row0 ..< row0 + chunks) is read through ``keys``
    /// rather than its codes: a guarded chunk, a position past the codes, or one of the
    /// latest append's exact rows. `gi` walks the guard bank forward as positions do.
    @inline(__always)
    private func readsExactly(_ t: Int, rows row0: Int, chunks: Int, guardIndex gi: inout Int) -> Bool {
        let k = keys
        while gi < k.guardCount && Int(k.guardRows[gi]) < row0 { gi += 1 }
        let guarded = gi < k.guardCount && Int(k.guardRows[gi]) < row0 + chunks
        return guarded || t >= codedPositions || (pendingKeys != nil && t >= pendingStart && t < pendingStart + pendingCount)
    }

    /// Scores of n positions from their 8-lane partial products, `partial[r * 8 + j]`:
    /// the eight finished together per query row, scaled, written to `scores + r * stride`.
    @inline(__always)
    private static func finish(_ partial: UnsafeMutablePointer<SIMD8<Float>>, rows: Int, count n: Int, scale: Float,
                               into scores: UnsafeMutablePointer<Float>, stride: Int) {
        for r in 0..<rows {
            let p = partial + r * 8
            let dots = transposedSums(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]) * scale
            let sr = scores + r * stride
            for j in 0..<n { sr[j] = dots[j] }
        }
    }

    /// ``scores`` on fixed-point keys. Runs of positions held as codes go to
    /// `sparsekv_key_scores` (`csr_keys.h`): eight positions at a time, indices unpacked,
    /// exact int32 sums of the atom rows, then scale, RoPE and the query products per lane,
    /// and the eight partial sums per query row finished as ``finish`` finishes them.
    /// Guarded and pending positions are decoded through ``keys`` one at a time.
    ///
    /// The kernels take the query rows in split order (a pair's two channels 16 apart, as
    /// the rotated key's and the RoPE table's), copied to 64-byte boundaries: the kernel reads
    /// each row in 64-byte loads, and rows of an `Array` start halfway into a line. Guarded
    /// and pending positions are scored from the rows as given.
    private func fixedPointScores(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>,
                                  rows: Int, scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int,
                                  scratch: UnsafeMutablePointer<Float>, splitRope: UnsafePointer<Float>) {
        withUnsafeTemporaryAllocation(byteCount: rows * 64 * MemoryLayout<Float>.stride, alignment: 64) { qb in
            let split = qb.baseAddress!.bindMemory(to: Float.self, capacity: rows * 64)
            withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: rows) { qp in
                for r in 0..<rows {
                    for i in 0..<64 { split[r * 64 + i] = queries[r][sparsekv_split_channel(i)] }
                    qp[r] = UnsafePointer(split + r * 64)
                }
                fixedPointScores(head: g, lo, hi, queries: queries, splitQueries: UnsafePointer(qp.baseAddress!), rows: rows,
                                 scale: scale, into: scores, stride: stride, scratch: scratch, splitRope: splitRope)
            }
        }
    }

    private func fixedPointScores(head g: Int, _ lo: Int, _ hi: Int, queries: UnsafePointer<UnsafePointer<Float>>,
                                  splitQueries: UnsafePointer<UnsafePointer<Float>>, rows: Int, scale: Float,
                                  into scores: UnsafeMutablePointer<Float>, stride: Int, scratch: UnsafeMutablePointer<Float>,
                                  splitRope: UnsafePointer<Float>) {
        let k = keys, chunks = 64 / k.m, s = k.sparsity, perPosition = chunks * s
        var gi = k.firstGuard(atOrAfter: lo * kvHeads * chunks), gs = gi
        let q = UnsafeRawPointer(splitQueries).assumingMemoryBound(to: UnsafePointer<Float>?.self)
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 8 * perPosition) { ib in
            // The kernels' products, (rows, 8, 16) floats; a guarded position's partial sums,
            // `partial[r * 8]`, reuse the room.
            withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: rows * 16) { pb in
                let partial = pb.baseAddress!
                partial.initialize(repeating: SIMD8(), count: rows * 16)
                var run = sparsekv_key_run(
                    block: sparsekv_key_block(
                        atoms: k.fixed, m: k.m, s: s, idx: ib.baseAddress!, coef: k.coefficients8,
                        coefStride: kvHeads * perPosition, scales: k.scales, scaleStride: kvHeads * chunks, unit: k.unit,
                        rope: splitRope, queries: q, rows: rows, n: 0, skip: 0,
                        partial: UnsafeMutableRawPointer(partial).assumingMemoryBound(to: Float.self)),
                    indexBytes: k.indexBytes, indexByteCount: k.indexByteCount, width: k.width, kvHeads: kvHeads, head: g,
                    scale: scale, scores: scores - lo, stride: stride, level: Int32(CSRKeyKernels.level.rawValue),
                    vbmi: CSRIndexUnpacking.usesVBMI(sparsity: s, width: k.width) ? 1 : 0)
                var t = lo
                while t < hi {
                    if readsExactly(t, rows: (t * kvHeads + g) * chunks, chunks: chunks, guardIndex: &gi) {
                        let x = Row64(loading: keys(head: g, t, t + 1, scratch: scratch))
                        for r in 0..<rows { partial[r * 8] = x.partialDot(queries[r]) }
                        Self.finish(partial, rows: rows, count: 1, scale: scale, into: scores + t - lo, stride: stride)
                        t += 1
                        continue
                    }
                    let end = codedRunEnd(k, exact: pendingKeys != nil, head: g, from: t, hi, guardIndex: gi, scan: &gs)
                    sparsekv_key_scores(&run, t, end)
                    t = end
                }
            }
        }
    }

    /// The end of the run of positions from t (< hi, itself held as codes) whose rows in
    /// `v` are all codes: the next position of head g with a guarded row, the first of the
    /// latest append's exact rows (when `exact`), the end of the codes, or hi. `gs` walks
    /// the guard bank forward from `gi`, the first guard entry at or after t's rows.
    @inline(__always)
    private func codedRunEnd(_ v: CSRStreamView, exact: Bool, head g: Int, from t: Int, _ hi: Int, guardIndex gi: Int,
                             scan gs: inout Int) -> Int {
        let chunks = headDim / v.m
        var end = min(hi, max(t + 1, codedPositions))
        if exact && pendingStart > t { end = min(end, pendingStart) }
        gs = max(gs, gi)
        while gs < v.guardCount {
            let headRow = Int(v.guardRows[gs]) / chunks  // position * kvHeads + head
            if headRow % kvHeads == g { return min(end, headRow / kvHeads) }
            gs += 1
        }
        return end
    }

    func values(head g: Int, _ lo: Int, _ hi: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        decode(values, exact: pendingValues, head: g, lo, hi, into: scratch)
        return UnsafePointer(scratch)
    }

    /// RoPE on one row from its position's (cos, sin) pairs, 8 channel pairs at a time:
    /// out = x * (c, c) + swap(x) * (-s, s). Written as element shuffles, which the
    /// compiler turns into duplicate-lanes moves and one add-subtract (the earlier 64-bit
    /// integer rotation was lowered to scalar code). The same products and sums as the
    /// scalar tail below, so every path rounds alike.
    @inline(__always)
    static func rotate(_ row: UnsafeMutablePointer<Float>, table cs: UnsafePointer<Float>, pairs: Int) {
        let raw = UnsafeMutableRawPointer(row), t = UnsafeRawPointer(cs)
        var i = 0
        while i + 8 <= pairs {
            let x = raw.loadUnaligned(fromByteOffset: i * 8, as: SIMD16<Float>.self)
            let u = t.loadUnaligned(fromByteOffset: i * 8, as: SIMD16<Float>.self)
            let c = SIMD16<Float>(u[0], u[0], u[2], u[2], u[4], u[4], u[6], u[6],
                                  u[8], u[8], u[10], u[10], u[12], u[12], u[14], u[14])
            let sn = SIMD16<Float>(-u[1], u[1], -u[3], u[3], -u[5], u[5], -u[7], u[7],
                                   -u[9], u[9], -u[11], u[11], -u[13], u[13], -u[15], u[15])
            let swapped = SIMD16<Float>(x[1], x[0], x[3], x[2], x[5], x[4], x[7], x[6],
                                        x[9], x[8], x[11], x[10], x[13], x[12], x[15], x[14])
            raw.storeBytes(of: x * c + swapped * sn, toByteOffset: i * 8, as: SIMD16<Float>.self)
            i += 8
        }
        while i < pairs {
            let c = cs[2 * i], s = cs[2 * i + 1], a = row[2 * i], b = row[2 * i + 1]
            row[2 * i] = a * c - b * s
            row[2 * i + 1] = a * s + b * c
            i += 1
        }
    }

    // MARK: - Values in atom space

    /// Per query row: (chunks, atoms) weights per atom, then (d) channels for exact rows.
    var accumulatorWidth: Int { (headDim / values.m) * values.atomCount + headDim }

    /// Query rows go four at a time (a decode step of one token has 3 per KV head; of
    /// several tokens, 3 per token).
    func accumulate(head g: Int, _ lo: Int, _ hi: Int, weights p: UnsafePointer<Float>, stride: Int, rows: Int,
                    into acc: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        var r0 = 0
        while r0 < rows {
            let k = min(4, rows - r0)
            accumulateInterleaved(head: g, lo, hi, weights: p + r0 * stride, stride: stride, rows: k,
                                  into: acc + r0 * accumulatorWidth, scratch: scratch)
            r0 += k
        }
    }

    /// `accumulate` for up to 4 query rows: the atom accumulators of all rows sit side by
    /// side, acc4[atom] = (row 0, ..., row 3), so a pair costs one 4-wide multiply-add on
    /// one scattered location instead of one scalar read-modify-write per row. They are
    /// added into `acc`'s rows at the end. A position's pairs are unpacked just before
    /// they are added, into a few floats that stay in L1.
    private func accumulateInterleaved(head g: Int, _ lo: Int, _ hi: Int, weights p: UnsafePointer<Float>, stride: Int,
                                       rows: Int, into acc: UnsafeMutablePointer<Float>,
                                       scratch: UnsafeMutablePointer<Float>) {
        let v = values, d = headDim, m = v.m, chunks = d / m, a = v.atomCount, w = accumulatorWidth, s = v.sparsity
        let dense = chunks * a, perPosition = chunks * s
        /// The attention weights of position lo + i, one lane per query row.
        @inline(__always) func weight(_ i: Int) -> SIMD4<Float> {
            switch rows {
            case 1: SIMD4(p[i], 0, 0, 0)
            case 2: SIMD4(p[i], p[stride + i], 0, 0)
            case 3: SIMD4(p[i], p[stride + i], p[2 * stride + i], 0)
            default: SIMD4(p[i], p[stride + i], p[2 * stride + i], p[3 * stride + i])
            }
        }
        withUnsafeTemporaryAllocation(of: SIMD4<Float>.self, capacity: dense) { buf in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: perPosition) { ib in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: perPosition) { wb in
                    let acc4 = buf.baseAddress!, idx = ib.baseAddress!, cw = wb.baseAddress!
                    acc4.initialize(repeating: SIMD4(), count: dense)
                    var gi = v.firstGuard(atOrAfter: (lo * kvHeads + g) * chunks), gs = gi
                    var run = sparsekv_value_run(
                        indexBytes: v.indexBytes, indexByteCount: v.indexByteCount, width: v.width, s: s, chunks: chunks,
                        kvHeads: kvHeads, head: g, atoms: a, coef: v.coefficients8, scales: v.scales, weights: p,
                        stride: stride, rows: rows, lo: lo,
                        acc4: UnsafeMutableRawPointer(acc4).assumingMemoryBound(to: sparsekv_float4.self))
                    var t = lo
                    while t < hi {
                        defer { t += 1 }
                        if let exact = pendingValues, t >= pendingStart, t < pendingStart + pendingCount {
                            let x = exact + (t - pendingStart) * kvHeads * d + g * d
                            for r in 0..<rows { Kernels.axpy(p[r * stride + t - lo], x, acc + r * w + dense, d) }
                            continue
                        }
                        let row0 = (t * kvHeads + g) * chunks
                        while gi < v.guardCount && Int(v.guardRows[gi]) < row0 { gi += 1 }
                        let guarded = gi < v.guardCount && Int(v.guardRows[gi]) < row0 + chunks
                        if v.int8 && !guarded {
                            // A run of positions held as codes only goes to csr_values.h.
                            let end = codedRunEnd(v, exact: pendingValues != nil, head: g, from: t, hi, guardIndex: gi,
                                                  scan: &gs)
                            CSRValueKernels.accumulate(&run, t, end)
                            t = end - 1
                            continue
                        }
                        let weight = weight(t - lo)
                        if guarded {
                            // A guarded chunk goes in channel space; its position's other chunks as codes.
                            for c in 0..<chunks {
                                if gi < v.guardCount && Int(v.guardRows[gi]) == row0 + c {
                                    v.copyGuard(gi, into: scratch)
                                    for r in 0..<rows { Kernels.axpy(weight[r], scratch, acc + r * w + dense + c * m, m) }
                                    gi += 1
                                } else {
                                    v.unpack(rows: row0 + c, count: 1, indices: idx, weights: cw)
                                    let base = acc4 + c * a
                                    for k in 0..<s { base[Int(idx[k])] += weight * cw[k] }
                                }
                            }
                            continue
                        }
                        v.unpack(rows: row0, count: chunks, indices: idx, weights: cw)
                        for c in 0..<chunks {
                            let base = acc4 + c * a, ij = idx + c * s, wj = cw + c * s
                            for k in 0..<s { base[Int(ij[k])] += weight * wj[k] }
                        }
                    }
                    for r in 0..<rows {
                        let ar = acc + r * w
                        for j in 0..<dense { ar[j] += acc4[j][r] }
                    }
                }
            }
        }
    }

    func finish(head g: Int, acc: UnsafePointer<Float>, rows: Int, scale: UnsafePointer<Float>,
                into out: UnsafeMutablePointer<Float>, outStride: Int) {
        let v = values, d = headDim, m = v.m, chunks = d / m, a = v.atomCount, w = accumulatorWidth
        for r in 0..<rows { (out + r * outStride).update(from: acc + r * w + chunks * a, count: d) }
        #if arch(x86_64)
        if CSRValueKernels.avx512 && (m == 32 || m == 64) {
            // Up to four rows in one pass over the atoms (the same sums, row by row).
            let bits = UnsafeRawPointer(v.atoms).assumingMemoryBound(to: UInt16.self)
            var r0 = 0
            while r0 < rows {
                let k = min(4, rows - r0)
                for c in 0..<chunks {
                    sparsekv_half_atoms_product_avx512(bits, a, m, acc + r0 * w + c * a, w, k, out + r0 * outStride + c * m,
                                                       outStride)
                }
                r0 += k
            }
            for r in 0..<rows { Kernels.scale(out + r * outStride, count: d, by: scale[r]) }
            return
        }
        #endif
        for r in 0..<rows {
            let o = out + r * outStride, ar = acc + r * w
            for c in 0..<chunks {
                let oc = o + c * m, weights = ar + c * a
                Kernels.sumOfHalfRows(count: a, dim: m, weights: weights, rows: v.atoms, indices: nil, into: oc, fromZero: false)
            }
            Kernels.scale(o, count: d, by: scale[r])
        }
    }
}

/// One 64-channel row held in eight 8-lane registers, for the CSR key scoring.
struct Row64 {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var a4 = SIMD8<Float>(), a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>()

    init() {}

    @inline(__always)
    init(loading p: UnsafePointer<Float>) {
        let r = UnsafeRawPointer(p)
        @inline(__always) func l(_ i: Int) -> SIMD8<Float> { r.loadUnaligned(fromByteOffset: i * 32, as: SIMD8<Float>.self) }
        (a0, a1, a2, a3, a4, a5, a6, a7) = (l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7))
    }

    /// The weighted sum of a position's fp16 atom rows: one 64-channel chunk of `sparsity`
    /// pairs, or two 32-channel chunks of `sparsity` pairs each. Each lane from zero, pair
    /// by pair, as `Kernels.sumOfHalfRows`.
    @inline(__always)
    init(summing atoms: UnsafePointer<Float16>, m: Int, sparsity s: Int, indices o: UnsafePointer<Int32>,
         weights w: UnsafePointer<Float>) {
        @inline(__always) func half(_ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
            SIMD8<Float>(p.loadUnaligned(fromByteOffset: i * 16, as: SIMD8<Float16>.self))
        }
        /// 32 channels (at `offset` in each row) summed over pairs k0 ..< k1.
        @inline(__always)
        func sum32(_ k0: Int, _ k1: Int, rowStride: Int, offset: Int)
            -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
            var x0 = SIMD8<Float>(), x1 = SIMD8<Float>(), x2 = SIMD8<Float>(), x3 = SIMD8<Float>()
            for k in k0..<k1 {
                let c = SIMD8<Float>(repeating: w[k]), p = UnsafeRawPointer(atoms + Int(o[k]) * rowStride + offset)
                x0.addProduct(c, half(p, 0))
                x1.addProduct(c, half(p, 1))
                x2.addProduct(c, half(p, 2))
                x3.addProduct(c, half(p, 3))
            }
            return (x0, x1, x2, x3)
        }
        // A 64-channel row as its two halves (as `Kernels.sumOfHalfRows`), or two 32-channel chunks.
        (a0, a1, a2, a3) = sum32(0, s, rowStride: m, offset: 0)
        (a4, a5, a6, a7) = m == 64 ? sum32(0, s, rowStride: 64, offset: 32) : sum32(s, 2 * s, rowStride: 32, offset: 0)
    }

    /// RoPE from the position's 32 (cos, sin) pairs, as `CSRAttentionSource.rotate`.
    @inline(__always)
    func rotated(by table: UnsafePointer<Float>) -> Row64 {
        let tr = UnsafeRawPointer(table)
        @inline(__always) func r(_ x: SIMD8<Float>, _ i: Int) -> SIMD8<Float> {
            let u = tr.loadUnaligned(fromByteOffset: i * 32, as: SIMD8<Float>.self)
            let c = SIMD8<Float>(u[0], u[0], u[2], u[2], u[4], u[4], u[6], u[6])
            let sn = SIMD8<Float>(-u[1], u[1], -u[3], u[3], -u[5], u[5], -u[7], u[7])
            let swapped = SIMD8<Float>(x[1], x[0], x[3], x[2], x[5], x[4], x[7], x[6])
            return x * c + swapped * sn
        }
        var o = Row64()
        (o.a0, o.a1, o.a2, o.a3) = (r(a0, 0), r(a1, 1), r(a2, 2), r(a3, 3))
        (o.a4, o.a5, o.a6, o.a7) = (r(a4, 4), r(a5, 5), r(a6, 6), r(a7, 7))
        return o
    }

    /// The 8 lanes `dots8` accumulates for this row against q (channel blocks in order),
    /// before its lane sums.
    @inline(__always)
    func partialDot(_ q: UnsafePointer<Float>) -> SIMD8<Float> {
        let r = UnsafeRawPointer(q)
        @inline(__always) func l(_ i: Int) -> SIMD8<Float> { r.loadUnaligned(fromByteOffset: i * 32, as: SIMD8<Float>.self) }
        var s = SIMD8<Float>()
        s.addProduct(a0, l(0))
        s.addProduct(a1, l(1))
        s.addProduct(a2, l(2))
        s.addProduct(a3, l(3))
        s.addProduct(a4, l(4))
        s.addProduct(a5, l(5))
        s.addProduct(a6, l(6))
        s.addProduct(a7, l(7))
        return s
    }
}
