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
        try requireLayer(layer)
        let s = layer - geometry.layers.lowerBound
        let ks = keyStreams[s], vs = valueStreams[s], p = pending[s]
        // Nothing here changes while the kernel runs, so the arrays' storage stays put.
        let src = CSRAttentionSource(
            keys: CSRStreamView(ks), values: CSRStreamView(vs), kvHeads: geometry.kvHeads, headDim: geometry.headDim,
            pendingStart: p?.start ?? 0, pendingCount: p?.count ?? 0,
            pendingKeys: p.map { storageBase($0.keys) }, pendingValues: p.map { storageBase($0.values) },
            ropeTable: storageBase(ropeTable), ropeHalf: rope.ropeDimension / 2)
        guard let inverse = keyScales?[s].inverse else {
            return withExtendedLifetime((ks, vs, p, ropeTable)) {
                fusedAttend(src, layer: layer, queries: queries, count: n, heads: heads, scale: scale, into: out)
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
        withExtendedLifetime((ks, vs, p, ropeTable)) {
            scaled.withUnsafeBufferPointer {
                fusedAttend(src, layer: layer, queries: $0.baseAddress!, count: n, heads: heads, scale: scale, into: out)
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
        let s = sparsity, first = row0 * s, total = n * s, mask = (1 << width) - 1
        var k = 0, bit = first * width
        // Four indices from one 8-byte read while they lie inside the index bytes (after a
        // shift of at most 7 bits, 57 bits hold four of up to 14 bits), then one per read.
        if width <= 14 {
            let w = UInt64(width)
            while k + 4 <= total && (bit >> 3) + 8 <= indexByteCount {
                let word = UInt64(littleEndian: UnsafeRawPointer(indexBytes + (bit >> 3)).loadUnaligned(as: UInt64.self))
                    >> UInt64(bit & 7)
                let m = UInt64(mask)
                o[k] = Int32(truncatingIfNeeded: word & m)
                o[k + 1] = Int32(truncatingIfNeeded: (word >> w) & m)
                o[k + 2] = Int32(truncatingIfNeeded: (word >> (2 * w)) & m)
                o[k + 3] = Int32(truncatingIfNeeded: (word >> (3 * w)) & m)
                k += 4
                bit += 4 * width
            }
        }
        while k < total && (bit >> 3) + 8 <= indexByteCount {
            let word = UnsafeRawPointer(indexBytes + (bit >> 3)).loadUnaligned(as: UInt64.self)
            o[k] = Int32(truncatingIfNeeded: Int(truncatingIfNeeded: UInt64(littleEndian: word) >> UInt64(bit & 7)) & mask)
            k += 1
            bit += width
        }
        while k < total {
            o[k] = Int32(truncatingIfNeeded: CSRCodeStream.readIndex(indexBytes, first + k, width: width))
            k += 1
        }
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
    /// The latest append's exact rows (pre-RoPE keys), (pendingCount, kvHeads * d) each.
    let pendingStart: Int, pendingCount: Int
    let pendingKeys: UnsafePointer<Float>?, pendingValues: UnsafePointer<Float>?
    /// (capacity, half, 2) cos, sin
    let ropeTable: UnsafePointer<Float>
    let ropeHalf: Int

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
        forEachUnpackedBlock(v, head: g, lo, hi) { b0, b1, idx, w in
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
    /// added into `acc`'s rows at the end.
    private func accumulateInterleaved(head g: Int, _ lo: Int, _ hi: Int, weights p: UnsafePointer<Float>, stride: Int,
                                       rows: Int, into acc: UnsafeMutablePointer<Float>,
                                       scratch: UnsafeMutablePointer<Float>) {
        let v = values, d = headDim, m = v.m, chunks = d / m, a = v.atomCount, w = accumulatorWidth, s = v.sparsity
        let dense = chunks * a, perPosition = chunks * s
        withUnsafeTemporaryAllocation(of: SIMD4<Float>.self, capacity: dense) { buf in
            let acc4 = buf.baseAddress!
            acc4.initialize(repeating: SIMD4(), count: dense)
            var gi = v.firstGuard(atOrAfter: (lo * kvHeads + g) * chunks)
            forEachUnpackedBlock(v, head: g, lo, hi) { b0, b1, idx, cw in
                for t in b0..<b1 {
                    if let exact = pendingValues, t >= pendingStart, t < pendingStart + pendingCount {
                        let x = exact + (t - pendingStart) * kvHeads * d + g * d
                        for r in 0..<rows { Kernels.axpy(p[r * stride + t - lo], x, acc + r * w + dense, d) }
                        continue
                    }
                    var weight = SIMD4<Float>()
                    for r in 0..<rows { weight[r] = p[r * stride + t - lo] }
                    for c in 0..<chunks {
                        let row = (t * kvHeads + g) * chunks + c
                        while gi < v.guardCount && Int(v.guardRows[gi]) < row { gi += 1 }
                        if gi < v.guardCount && Int(v.guardRows[gi]) == row {
                            v.copyGuard(gi, into: scratch)
                            for r in 0..<rows { Kernels.axpy(weight[r], scratch, acc + r * w + dense + c * m, m) }
                            continue
                        }
                        let base = acc4 + c * a, j = (t - b0) * perPosition + c * s
                        let ij = idx + j, wj = cw + j
                        for k in 0..<s { base[Int(ij[k])] += weight * wj[k] }
                    }
                }
            }
            for r in 0..<rows {
                let ar = acc + r * w
                for j in 0..<dense { ar[j] += acc4[j][r] }
            }
        }
    }

    func finish(head g: Int, acc: UnsafePointer<Float>, rows: Int, scale: UnsafePointer<Float>,
                into out: UnsafeMutablePointer<Float>, outStride: Int) {
        let v = values, d = headDim, m = v.m, chunks = d / m, a = v.atomCount, w = accumulatorWidth
        for r in 0..<rows {
            let o = out + r * outStride, ar = acc + r * w
            o.update(from: ar + chunks * a, count: d)
            for c in 0..<chunks {
                let oc = o + c * m, weights = ar + c * a
                Kernels.sumOfHalfRows(count: a, dim: m, weights: weights, rows: v.atoms, indices: nil, into: oc, fromZero: false)
            }
            Kernels.scale(o, count: d, by: scale[r])
        }
    }
}
