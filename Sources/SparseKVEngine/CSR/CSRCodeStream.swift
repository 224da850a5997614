import Foundation
import SparseCoding

/// The codes of one layer's keys (or values) in a session: every head vector chunk coded
/// as s (index, coefficient) pairs over the group's offline atoms plus this session's
/// online atoms, and a guard bank of vectors kept exactly.
///
/// Rows are vector chunks in the order (token, KV head, chunk), each m = headDim / s_n
/// channels. Indices are packed to `width` bits in one little-endian bit stream,
/// coefficients are fp16 (or an fp16 scale per row and int8 per pair). Every array here
/// is session state; the encoder and the fp32 copy of the atoms are derived from it.
///
/// In memory every row has `sparsity` slots, as the fused attention reads them. With
/// error-targeted pursuit a row uses only its first `pairCounts[row]` slots (the rest are
/// index 0, coefficient 0), and with entropy coding the indices are rANS-coded, or with
/// gap coding (rows in ascending atom order) Rice-coded gaps: all only in the stored and
/// transferred form (``writeRows(_:to:)``), whose size ``byteCount`` reports;
/// ``residentByteCount`` is the size in memory.
final class CSRCodeStream {
    let m: Int
    let sparsity: Int
    let format: CoefficientFormat
    /// With int8 coefficients, the bits each takes in the stored form (8, or 4...7 with
    /// `coef=iN`): q in -L...L, L = 2^(bits-1) - 1. Memory holds q as int8 either way.
    let coefficientBits: Int
    var coefficientLevels: Float { Float((1 << (coefficientBits - 1)) - 1) }
    /// Bits per stored index, fixed for the session: covers N offline + the online budget.
    let width: Int
    let onlineBudget: Int
    let guardFraction: Double
    let guardError: Float
    let offline: SparseDictionary
    let algorithm: PursuitAlgorithm
    /// Error-targeted pursuit's budget (relative squared error), nil for fixed sparsity.
    let errorBudget: Float?
    /// The group's static index table (N + 1 symbols: the offline atoms, then one escape
    /// for any online atom), when indices are entropy-coded.
    let entropyTable: FrequencyTable?
    /// Rows hold their pairs in ascending atom order and the stored form codes the indices
    /// as gaps (`ec=gaps`, ``CSRSettings/gapCoded``).
    let gapCoded: Bool
    /// The settings the stream was made with (``scratch()`` makes another alike).
    private let settings: CSRSettings
    /// The shared encoder over the offline atoms (built by the codec on first use).
    private let offlineEncoderProvider: () throws -> MatchingPursuitEncoder

    /// (online, m) fp16 bit patterns of the online atoms (unit norm).
    var onlineAtoms: [UInt16] = []
    /// Whether the session's online atoms were chosen (or installed from a transfer): they
    /// are chosen once, from the first append's rows, even when none qualified.
    var onlineAtomsSettled = false
    /// Packed indices of all rows, rows * sparsity values of `width` bits.
    var indexBytes: [UInt8] = []
    /// fp16 bits, (rows, s), when format is float16.
    var coefficients16: [UInt16] = []
    /// int8 codes (rows, s) and fp16 scales (rows), when format is int8.
    var coefficients8: [Int8] = []
    var scales: [UInt16] = []
    /// The first rows (the `sink=` tokens') always go to the guard bank, outside its budget.
    var sinkRows = 0
    /// Rows kept exactly, ascending, and their fp16 contents (guard, m).
    var guardRows: [UInt32] = []
    var guardValues: [UInt16] = []
    /// Pairs used by each row (rows), with error-targeted pursuit only.
    var pairCounts: [UInt8] = []
    var rows = 0
    /// The rANS-coded indices of all rows, made when first asked for and dropped on change.
    var codedIndexCache: CodedIndices?
    /// With gap coding: the Rice-code bits of the gaps of rows 0 ..< gapBitRows at each
    /// parameter, kept up as rows are added (rows never change once added; a truncation
    /// starts the count again), so ``byteCount`` need not code the stream, as a worker asks
    /// for it every step.
    var gapBits = [Int](repeating: 0, count: GapCoding.maxParameter + 1)
    var gapBitRows = 0
    /// With coefficient coding: symbol counts of the coefficients and scales of rows
    /// 0 ..< tallyRows, kept up the same way (``talliedCoefficients()``; nil: none yet).
    var coefficientTally: CoefficientCoding.Counts?
    var tallyRows = 0
    /// The stored form entropy-codes the int8 coefficients and scales (`ec=...+coef`,
    /// ``CSRSettings/coefficientCoded``).
    let coefficientCoded: Bool

    /// The atoms rows are rebuilt from, (N + online, m) fp16 bits: the offline atoms as the
    /// dictionary file stores them, then the online atoms. Pursuit picks codes against the
    /// normalised fp32 dictionary; every read (fused attention, materialized rows, the
    /// encoder's own error checks) rebuilds from these, half the bytes to gather.
    private(set) var atomBits: [UInt16] {
        didSet {
            fixedAtoms = offlineFixedAtoms.flatMap { atomBits.count == offlineBits.count ? $0 : FixedPointAtoms(bits: atomBits, m: m) }
        }
    }
    /// Keys with int8 coefficients read their rows from these instead of `atomBits`
    /// (``FixedPointAtoms``); nil for values, fp16 coefficients, or atoms that do not fit.
    private(set) var fixedAtoms: FixedPointAtoms?
    /// The offline atoms' fixed-point copy, shared by every session's stream of the group
    /// (``CSRCodec/fixedKeyAtoms(group:)``); nil when this stream does not use fixed point.
    private let offlineFixedAtoms: FixedPointAtoms?
    /// The offline part of `atomBits`.
    private let offlineBits: [UInt16]
    /// The encoder over offline + online atoms when there are online atoms (nil: the
    /// offline encoder).
    private var sessionEncoder: MatchingPursuitEncoder?

    /// - Parameter atomBits: the offline atoms as fp16 bits (the dictionary group's stored
    ///   atoms); nil rounds `offline`'s atoms.
    /// - Parameter fixedAtoms: for a key stream with int8 coefficients, the fixed-point copy
    ///   of the offline atoms its rows come from (``FixedPointAtoms``); with online atoms the
    ///   stream makes its own copy of all of them.
    init(offline: SparseDictionary, atomBits: [UInt16]? = nil, encoder: @escaping () throws -> MatchingPursuitEncoder,
         settings: CSRSettings, sparsity: Int, entropyTable: FrequencyTable? = nil, fixedAtoms: FixedPointAtoms? = nil) {
        m = offline.dimension
        self.sparsity = sparsity
        format = settings.coefficients
        coefficientBits = settings.coefficientBits
        onlineBudget = settings.onlineAtoms
        guardFraction = settings.guardFraction
        guardError = settings.guardError
        width = CSRCodec.indexWidth(atoms: offline.atomCount + settings.onlineAtoms)
        self.offline = offline
        algorithm = settings.algorithm
        errorBudget = settings.errorBudget
        self.entropyTable = settings.entropyCoded ? entropyTable : nil
        gapCoded = settings.gapCoded
        coefficientCoded = settings.coefficientCoded && settings.coefficients == .int8
        self.settings = settings
        offlineEncoderProvider = encoder
        offlineBits = atomBits ?? offline.atoms.map { HalfPrecision.bits($0) }
        self.atomBits = offlineBits
        let fits = settings.coefficients == .int8 && sparsity <= FixedPointAtoms.maxSparsity && fixedAtoms?.atoms.count == offlineBits.count
        offlineFixedAtoms = fits ? fixedAtoms : nil
        self.fixedAtoms = offlineFixedAtoms
    }

    /// An empty stream of this one's shape, settings and offline atoms, to parse a section
    /// into (``readRows(count:from:atomLimit:)``) without touching this one. It only parses,
    /// so it does not make fixed-point atoms (a replica makes one per layer and step).
    func scratch() -> CSRCodeStream {
        CSRCodeStream(offline: offline, atomBits: offlineBits, encoder: { throw CSRError.badSettings("a scratch stream does not encode") },
                      settings: settings, sparsity: sparsity, entropyTable: entropyTable)
    }

    /// Appends rows k ..< x.rows of `x`, a ``scratch()`` of this stream that parsed a
    /// section, exactly as stored there (the replica path: the original's codes, byte for byte).
    func appendRows(of x: CSRCodeStream, droppingFirst k: Int) {
        let p = sparsity, first = rows, n = x.rows - k
        guard n > 0 else { return }
        var idx = [UInt16](repeating: 0, count: n * p)
        x.indexBytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return }
            for i in 0..<n * p { idx[i] = UInt16(Self.readIndex(base, k * p + i, width: width)) }
        }
        appendIndices(idx)
        coefficients16 += x.coefficients16.dropFirst(k * p)
        coefficients8 += x.coefficients8.dropFirst(k * p)
        scales += x.scales.dropFirst(k)
        pairCounts += x.pairCounts.dropFirst(k)
        let g = x.guardRows.firstIndex { Int($0) >= k } ?? x.guardRows.count
        guardRows += x.guardRows[g...].map { $0 - UInt32(k) + UInt32(first) }
        guardValues += x.guardValues.dropFirst(g * m)
        rows = first + n
        codedIndexCache = nil
    }

    private func encoder() throws -> MatchingPursuitEncoder {
        if let e = sessionEncoder { return e }
        return try offlineEncoderProvider()
    }

    var onlineCount: Int { onlineAtoms.count / m }

    /// Every byte of session state in memory.
    var residentByteCount: Int {
        indexBytes.count + coefficients16.count * 2 + coefficients8.count + scales.count * 2 + pairCounts.count
            + onlineAtoms.count * 2 + guardRows.count * 4 + guardValues.count * 2
    }

    /// Pairs row `r` uses.
    @inline(__always)
    func pairCount(_ r: Int) -> Int { pairCounts.isEmpty ? sparsity : Int(pairCounts[r]) }

    // MARK: - Coding

    /// Codes `count` rows (count, m) and appends them.
    func append(_ x: UnsafePointer<Float>, count: Int) throws {
        guard count > 0 else { return }
        try settleOnlineAtoms(x, count: count)
        let s = sparsity
        var idx = [UInt16](repeating: 0, count: count * s)  // (count, s)
        var coef = [Float](repeating: 0, count: count * s)  // (count, s)
        let encoder = try encoder()
        idx.withUnsafeMutableBufferPointer { ip in
            coef.withUnsafeMutableBufferPointer { cp in
                encoder.encode(count: count, vectors: x, indices: ip.baseAddress!, coefficients: cp.baseAddress!)
            }
        }
        try append(x, count: count, coded: &idx, &coef)
    }

    /// Whether rows can be coded apart from ``append(_:count:coded:_:)``, with
    /// ``pursuitEncoder()``: always, except before the first append of a session with an
    /// online budget, which chooses the online atoms from that append's rows.
    var codesApart: Bool { onlineBudget == 0 || onlineAtomsSettled }

    /// Chooses the online atoms from `count` rows unless they are settled. A cache with a
    /// `recent=` buffer calls this with its first append's rows (the prompt), which it
    /// codes only as they leave the buffer.
    func settleOnlineAtoms(_ x: UnsafePointer<Float>, count: Int) throws {
        guard !codesApart, count > 0 else { return }
        try chooseOnlineAtoms(x, count: count)
        onlineAtomsSettled = true
    }

    /// The encoder whose pairs `append` stores. Reading it changes nothing, so several
    /// threads may code disjoint rows with it at once (when ``codesApart``).
    func pursuitEncoder() throws -> MatchingPursuitEncoder { try encoder() }

    /// Appends `count` rows (count, m) whose pursuit pairs `idx` and `coef` (count, s) came
    /// from ``pursuitEncoder()`` (error targeting, storage and the guard happen here).
    func append(_ x: UnsafePointer<Float>, count: Int, coded idx: inout [UInt16], _ coef: inout [Float]) throws {
        let s = sparsity
        precondition(idx.count == count * s && coef.count == count * s, "pairs of \(count) rows expected")
        codedIndexCache = nil
        if let budget = errorBudget {
            try appendTargeted(x, count: count, budget: budget, indices: &idx, coefficients: &coef)
            return
        }
        if gapCoded { Self.sortPairs(&idx, &coef, sparsity: s, used: repeatElement(s, count: count)) }
        for r in 0..<count { storeRow(&coef, row: r, pairs: s) }
        appendIndices(idx)
        if guardFraction > 0 || rows < sinkRows {
            var candidates: [(row: Int, error: Float)] = []
            var out = [Float](repeating: 0, count: m)
            for r in 0..<count {
                let scale = format == .int8 ? HalfPrecision.float(scales[rows + r]) : 1
                reconstruct(idx[r * s..<(r + 1) * s], coef[r * s..<(r + 1) * s], scale: scale, into: &out)
                let rel = out.withUnsafeBufferPointer { Self.relativeError(x + r * m, $0.baseAddress!, m) }
                if rel > guardError { candidates.append((r, rel)) }
            }
            _ = addGuards(x, count: count, candidates: candidates)
        }
        rows += count
    }

    /// Error-targeted pursuit on `count` rows coded with `sparsity` MP pairs each: row r
    /// keeps the shortest prefix whose reconstruction, with coefficients as stored, has a
    /// relative squared error of at most `budget` (MP's prefixes are its own shorter
    /// codes). Rows that miss the budget with every pair are guard candidates; a row the
    /// guard takes stores no pairs.
    private func appendTargeted(_ x: UnsafePointer<Float>, count: Int, budget: Float,
                                indices idx: inout [UInt16], coefficients coef: inout [Float]) throws {
        let s = sparsity
        var used = [Int](repeating: s, count: count)
        var candidates: [(row: Int, error: Float)] = []
        var rounded = [Float](repeating: 0, count: s), out = [Float](repeating: 0, count: m)
        for r in 0..<count {
            let xr = x + r * m
            var energy: Float = 0
            for i in 0..<m { energy += xr[i] * xr[i] }
            guard energy > 0 else { used[r] = 0; continue }
            // MP removes c² of energy per step: the first prefix that should meet the
            // budget before rounding; then check the stored form from there on.
            var k = 1, left = energy - coef[r * s] * coef[r * s]
            while k < s && left > budget * energy {
                left -= coef[r * s + k] * coef[r * s + k]
                k += 1
            }
            var error = Float.infinity
            while k <= s {
                Self.roundPrefix(coef, row: r, sparsity: s, pairs: k, format: format, levels: coefficientLevels, into: &rounded)
                let scale = format == .int8 ? Self.int8Scale(coef, row: r, sparsity: s, pairs: k, levels: coefficientLevels).0 : 1
                reconstruct(idx[r * s..<r * s + k], rounded[0..<k], scale: scale, into: &out)
                error = out.withUnsafeBufferPointer { Self.relativeError(xr, $0.baseAddress!, m) }
                if error <= budget { break }
                k += 1
            }
            used[r] = min(k, s)
            if error > budget { candidates.append((r, error)) }
        }
        for r in addGuards(x, count: count, candidates: candidates) { used[r] = 0 }
        for r in 0..<count {
            for k in used[r]..<s {
                idx[r * s + k] = 0
                coef[r * s + k] = 0
            }
        }
        if gapCoded { Self.sortPairs(&idx, &coef, sparsity: s, used: used) }
        for r in 0..<count {
            storeRow(&coef, row: r, pairs: used[r])
            pairCounts.append(UInt8(used[r]))
        }
        appendIndices(idx)
        rows += count
    }

    /// Puts the first `used[r]` pairs of each row r in ascending index order (a stable
    /// sort: an atom taken twice keeps its pursuit order), coefficients alongside. The sum
    /// a row stands for is the same, added in another order.
    static func sortPairs<C: Collection<Int>>(_ idx: inout [UInt16], _ coef: inout [Float], sparsity s: Int, used: C) {
        for (r, n) in used.enumerated() {
            let base = r * s
            // Insertion sort: a few pairs per row, no allocation, stable.
            for j in 1..<max(1, n) {
                let (i, c) = (idx[base + j], coef[base + j])
                var k = j
                while k > 0 && idx[base + k - 1] > i {
                    (idx[base + k], coef[base + k]) = (idx[base + k - 1], coef[base + k - 1])
                    k -= 1
                }
                (idx[base + k], coef[base + k]) = (i, c)
            }
        }
    }

    /// The first `pairs` coefficients of row `row` rounded as they would be stored
    /// (int8: against the scale of those pairs' peak) into `out` (pairs values).
    static func roundPrefix(_ coef: [Float], row: Int, sparsity s: Int, pairs: Int, format: CoefficientFormat,
                            levels: Float = 127, into out: inout [Float]) {
        switch format {
        case .float16:
            for k in 0..<pairs { out[k] = HalfPrecision.float(HalfPrecision.bits(coef[row * s + k])) }
        case .int8:
            let (scale, inverse) = int8Scale(coef, row: row, sparsity: s, pairs: pairs, levels: levels)
            for k in 0..<pairs { out[k] = max(-levels, min(levels, (coef[row * s + k] * inverse).rounded())) * scale }
        }
    }

    /// The fp16-rounded scale (peak / levels) of a row's first `pairs` coefficients and its inverse.
    private static func int8Scale(_ coef: [Float], row: Int, sparsity s: Int, pairs: Int, levels: Float) -> (Float, Float) {
        var peak: Float = 0
        for k in 0..<pairs { peak = max(peak, abs(coef[row * s + k])) }
        let scale = HalfPrecision.float(HalfPrecision.bits(peak / levels))
        return (scale, scale > 0 ? 1 / scale : 0)
    }

    /// Appends row `row`'s stored form (all `sparsity` slots; those from `pairs` on are
    /// zero) and rounds its coefficients in place to what decoding will give.
    private func storeRow(_ coef: inout [Float], row r: Int, pairs: Int) {
        let s = sparsity
        switch format {
        case .float16:
            for k in 0..<s {
                let h = HalfPrecision.bits(coef[r * s + k])
                coefficients16.append(h)
                coef[r * s + k] = HalfPrecision.float(h)
            }
        case .int8:
            let levels = coefficientLevels
            let (scale, inverse) = Self.int8Scale(coef, row: r, sparsity: s, pairs: pairs, levels: levels)
            scales.append(HalfPrecision.bits(scale))
            for k in 0..<s {
                let q = max(-levels, min(levels, (coef[r * s + k] * inverse).rounded()))
                coefficients8.append(Int8(q))
                coef[r * s + k] = q * scale
            }
        }
    }

    /// Packs `idx` after the indices of the `rows` rows held, `width` bits each.
    func appendIndices(_ idx: [UInt16]) {
        let start = rows * sparsity * width
        indexBytes.append(contentsOf: repeatElement(0, count: (start + idx.count * width + 7) / 8 - indexBytes.count))
        guard width > 0, !idx.isEmpty else { return }
        indexBytes.withUnsafeMutableBufferPointer { o in
            var w = BitWriter(o.baseAddress!, atBit: start)
            for v in idx { w.put(UInt64(v), bits: width) }
            w.finish()
        }
    }

    /// Reconstruction of one row from codes already rounded to the stored format, as reads
    /// will see it. `scale` is the row's int8 scale: with fixed-point atoms the coefficients
    /// are q * scale, products exact in fp32 (q of 8 bits, scale of 11), so q comes back exactly.
    private func reconstruct(_ idx: ArraySlice<UInt16>, _ coef: ArraySlice<Float>, scale: Float, into out: inout [Float]) {
        if let fixed = fixedAtoms {
            let n = idx.count
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: n) { indices in
                withUnsafeTemporaryAllocation(of: Int8.self, capacity: n) { q in
                    for (k, (j, c)) in zip(idx, coef).enumerated() {
                        indices[k] = Int32(j)
                        q[k] = scale > 0 ? Int8((c / scale).rounded()) : 0
                    }
                    var bits = HalfPrecision.bits(scale)
                    CSRKeyKernels.rows(fixed.atoms.baseAddress, m: m, sparsity: n, indices: indices.baseAddress!,
                                       coefficients: q.baseAddress!, scales: &bits, unit: fixed.unit, count: 1, into: &out,
                                       level: .portable)
                }
            }
            return
        }
        for i in 0..<m { out[i] = 0 }
        for (j, c) in zip(idx, coef) {
            let base = Int(j) * m
            for i in 0..<m { out[i] += c * HalfPrecision.float(atomBits[base + i]) }
        }
    }

    /// Guard bank: the new rows among the first `sinkRows`, then of the candidate rows
    /// (among the `count` new ones), the worst first, while the bank less the sink stays
    /// within `guardFraction` of all rows. Returns the rows kept.
    private func addGuards(_ x: UnsafePointer<Float>, count: Int, candidates: [(row: Int, error: Float)]) -> [Int] {
        let sink = max(0, min(count, sinkRows - rows))
        let budget = Int(guardFraction * Double(rows + count)) - (guardRows.count - min(sinkRows, rows))
        var kept = Array(0..<sink)
        if budget > 0 {
            kept += candidates.filter { $0.row >= sink }.sorted { $0.error > $1.error }.prefix(budget).map(\.row)
        }
        kept.sort()
        for r in kept {
            guardRows.append(UInt32(rows + r))
            for i in 0..<m { guardValues.append(HalfPrecision.bits(x[r * m + i])) }
        }
        return kept
    }

    /// ||x - y||² / ||x||² over m values (0 for x = 0).
    static func relativeError(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ m: Int) -> Float {
        var err: Float = 0, norm: Float = 0
        for i in 0..<m {
            err += (x[i] - y[i]) * (x[i] - y[i])
            norm += x[i] * x[i]
        }
        return norm > 0 ? err / norm : 0
    }

    /// Index `k` of a stream of `width`-bit values (width <= 16: it spans at most 3 bytes).
    @inline(__always)
    static func readIndex(_ bytes: UnsafePointer<UInt8>, _ k: Int, width w: Int) -> Int {
        let bit = k * w, byte = bit >> 3, off = bit & 7
        var word = Int(bytes[byte])
        if off + w > 8 { word |= Int(bytes[byte + 1]) << 8 }
        if off + w > 16 { word |= Int(bytes[byte + 2]) << 16 }
        return (word >> off) & ((1 << w) - 1)
    }

    /// Reverse sequential sampling: walking the prompt's rows from the last to the first,
    /// a row becomes an online atom when the offline atoms fit it worse than half the
    /// median row's error (rows they fit well would waste an atom) and no online atom chosen so far points the same way (|cos| > 0.9), until the
    /// budget is spent. Recent tokens are looked at first because they predict what the
    /// following tokens look like best.
    private func chooseOnlineAtoms(_ x: UnsafePointer<Float>, count: Int) throws {
        let codes = try offlineEncoderProvider().encode(Array(UnsafeBufferPointer(start: x, count: count * m)), count: count)
        let fit = try offline.decode(codes)  // (count, m)
        var errors = [Float](repeating: 0, count: count)
        for r in 0..<count {
            errors[r] = fit.withUnsafeBufferPointer { Self.relativeError(x + r * m, $0.baseAddress! + r * m, m) }
        }
        let median = errors.sorted()[count / 2]
        var chosen: [Float] = []  // (k, m) unit vectors
        var r = count - 1
        while r >= 0 && chosen.count / m < onlineBudget {
            defer { r -= 1 }
            guard errors[r] > median / 2 else { continue }
            var norm: Float = 0
            for i in 0..<m { norm += x[r * m + i] * x[r * m + i] }
            guard norm > 1e-12 else { continue }
            let u = (0..<m).map { Float(Float16(x[r * m + $0] / norm.squareRoot())) }
            var similar = false
            for a in 0..<chosen.count / m {
                var dot: Float = 0
                for i in 0..<m { dot += u[i] * chosen[a * m + i] }
                if abs(dot) > 0.9 { similar = true; break }
            }
            if !similar { chosen += u }
        }
        guard !chosen.isEmpty else { return }
        try setOnlineAtoms(chosen.map { HalfPrecision.bits($0) })
    }

    /// Installs online atoms (fp16 bits, (k, m)) and rebuilds the encoder over offline + online.
    func setOnlineAtoms(_ bits: [UInt16]) throws {
        let k = bits.count / m
        guard k <= onlineBudget, bits.count == k * m else {
            throw KVCacheError.malformedPayload("\(k) online atoms, the settings allow \(onlineBudget)")
        }
        onlineAtoms = bits
        onlineAtomsSettled = true
        if k == 0 {
            atomBits = offlineBits
            sessionEncoder = nil
            return
        }
        do {
            let d = try SparseDictionary(atoms: offline.atoms + bits.map { HalfPrecision.float($0) },
                                         atomCount: offline.atomCount + k, dimension: m)
            atomBits = offlineBits + bits
            sessionEncoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: sparsity, algorithm: algorithm, keepsGram: false))
        } catch let e as SparseCodingError {
            throw KVCacheError.malformedPayload("online atoms: \(e.localizedDescription)")
        }
    }

    // MARK: - Decoding

    /// Writes row `r` (m floats) to `out`, ignoring the guard bank.
    @inline(__always)
    func decodeRow(_ r: Int, into out: UnsafeMutablePointer<Float>, atoms a: UnsafePointer<UInt16>,
                   indexBytes ib: UnsafePointer<UInt8>) {
        let s = sparsity, w = width
        if let fixed = fixedAtoms {
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: s) { idx in
                for k in 0..<s { idx[k] = Int32(Self.readIndex(ib, r * s + k, width: w)) }
                CSRKeyKernels.rows(fixed.atoms.baseAddress, m: m, sparsity: s, indices: idx.baseAddress!,
                                   coefficients: storageBase(coefficients8) + r * s, scales: storageBase(scales) + r,
                                   unit: fixed.unit, count: 1, into: out, level: .portable)
            }
            return
        }
        out.initialize(repeating: 0, count: m)
        for k in 0..<s {
            let j = Self.readIndex(ib, r * s + k, width: w)
            let c: Float
            switch format {
            case .float16: c = HalfPrecision.float(coefficients16[r * s + k])
            case .int8: c = Float(coefficients8[r * s + k]) * HalfPrecision.float(scales[r])
            }
            let atom = a + j * m
            for i in 0..<m { out[i] += c * HalfPrecision.float(atom[i]) }
        }
    }

    // MARK: - Truncation

    /// Keeps the first `keep` rows. Online atoms stay unless nothing is left.
    func truncate(rows keep: Int) {
        guard keep < rows else { return }
        if keep == 0 {
            try? setOnlineAtoms([])
            onlineAtomsSettled = false
        }
        let bits = keep * sparsity * width
        indexBytes.removeLast(indexBytes.count - (bits + 7) / 8)
        if bits % 8 != 0, let last = indexBytes.indices.last {
            indexBytes[last] &= UInt8((1 << (bits % 8)) - 1)
        }
        switch format {
        case .float16: coefficients16.removeLast(coefficients16.count - keep * sparsity)
        case .int8:
            coefficients8.removeLast(coefficients8.count - keep * sparsity)
            scales.removeLast(scales.count - keep)
        }
        if !pairCounts.isEmpty { pairCounts.removeLast(pairCounts.count - keep) }
        codedIndexCache = nil
        (gapBits, gapBitRows) = ([Int](repeating: 0, count: GapCoding.maxParameter + 1), 0)
        (coefficientTally, tallyRows) = (nil, 0)
        let g = guardRows.firstIndex { Int($0) >= keep } ?? guardRows.count
        guardRows.removeLast(guardRows.count - g)
        guardValues.removeLast(guardValues.count - g * m)
        rows = keep
    }
}
