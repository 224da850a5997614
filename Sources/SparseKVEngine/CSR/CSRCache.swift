import Foundation
import SparseCoding

/// The CSR KV cache (docs/ARCHITECTURE.md): every key and value head vector of a session held as
/// Matching Pursuit codes over the model's trained dictionary plus the session's online
/// atoms, with a guard bank for vectors the atoms fit badly.
///
/// Keys are coded **before RoPE** (the dictionary is trained on pre-RoPE keys) and rotated
/// when read. The tokens of the latest append to a layer are also kept exactly until the
/// next append, so a prompt chunk (or the token being decoded) attends to its own keys and
/// values uncompressed, as with the KIVI baseline and the CSR paper; those rows are working
/// memory of the current forward pass, and are neither counted nor serialized. With
/// `recent=W` the rows of the W latest tokens stay with them, rounded to fp16 (or, with
/// `buffer=i8`, to int8 per head vector; ``CSRBufferForm``) once an append follows (KIVI's
/// and the paper's full-precision buffer); those are stored, counted and transferred, and
/// a token is coded only when it leaves the buffer (from its stored row), so
/// the streams hold the codes of every token but the buffer's. Everything else the cache
/// holds is counted by ``byteCount(layer:)``.
public final class CSRCache: KVCache {
    public let geometry: KVCacheGeometry
    public let rope: RoPE
    public let codec: CSRCodec
    public var kind: String { Self.format.kind }

    /// [layer - first]
    var keyStreams: [CSRCodeStream]
    var valueStreams: [CSRCodeStream]
    var counts: [Int]
    /// [layer - first]: the rows attention reads exactly, pre-RoPE: the latest append's (exact)
    /// and, with `recent=W`, those of the W latest tokens before it (their stored values,
    /// ``bufferForm``): (start, n, keys (n, width), values (n, width), the leading rows
    /// already in stored form),
    /// positions start ..< start + n.
    var pending: [ExactRows?]
    /// Keep the latest append's exact rows after its attention (tests compare codes with them).
    var keepsLatestExactRows = false
    typealias ExactRows = (start: Int, count: Int, keys: [Float], values: [Float], rounded: Int)
    /// (capacity, ropeDimension / 2, 2) cos, sin; 64-byte aligned, as the key kernels read a
    /// position's 64 floats in 64-byte loads
    let ropeTable: AlignedFloats
    /// The same table in the split order the fixed-point key kernels read (`csr_keys.h`):
    /// int8 key coefficients, 64-channel heads, 32 rotated pairs; else nil.
    let splitRopeTable: AlignedFloats?
    /// [layer - first]: with a query-aware key metric, sqrt(w) and w^{-1/2} per channel of a
    /// key row (kvHeads * headDim). Keys enter the streams (and `pending`) scaled by the
    /// first; reads unscale them, and attention scales the queries by the second.
    let keyScales: [(forward: [Float], inverse: [Float])]?
    /// (count, headDim) handed out by reads
    private var keyScratch: [Float] = []
    private var valueScratch: [Float] = []

    init(geometry: KVCacheGeometry, rope: RoPE, codec: CSRCodec) {
        self.geometry = geometry
        self.rope = rope
        self.codec = codec
        let dict = codec.dictionary, s = codec.settings
        keyStreams = geometry.layers.map { l in
            let g = dict.keys.group(ofLayer: l), pairs = s.keySparsity(layer: l)
            return CSRCodeStream(offline: dict.keys.groups[g].dictionary, atomBits: dict.keys.groups[g].storedAtoms,
                                 encoder: { try codec.encoder(keys: true, group: g, sparsity: pairs) },
                                 settings: s, sparsity: pairs, entropyTable: dict.entropyTables?.keys[g],
                                 fixedAtoms: codec.fixedKeyAtoms(group: g))
        }
        valueStreams = geometry.layers.map { l in
            let g = dict.values.group(ofLayer: l), pairs = s.valueSparsity(layer: l)
            return CSRCodeStream(offline: dict.values.groups[g].dictionary, atomBits: dict.values.groups[g].storedAtoms,
                                 encoder: { try codec.encoder(keys: false, group: g, sparsity: pairs) },
                                 settings: s, sparsity: pairs, entropyTable: dict.entropyTables?.values[g])
        }
        for stream in keyStreams + valueStreams { stream.sinkRows = s.sinkTokens * geometry.rowWidth / stream.m }
        counts = Array(repeating: 0, count: geometry.layers.count)
        pending = Array(repeating: nil, count: geometry.layers.count)
        ropeTable = codec.ropeTable(rope, capacity: geometry.capacity)
        splitRopeTable = s.coefficients == .int8 && geometry.headDim == 64 && rope.ropeDimension == 64
            ? codec.splitRopeTable(rope, capacity: geometry.capacity) : nil
        keyScales = dict.keyMetric.map { m in
            geometry.layers.map { (forward: m.channelScales(layer: $0), inverse: m.channelScales(layer: $0, inverse: true)) }
        }
    }

    public func count(layer: Int) -> Int {
        geometry.layers.contains(layer) ? counts[layer - geometry.layers.lowerBound] : 0
    }

    // MARK: - Writing

    public func append(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, count n: Int) throws {
        guard geometry.layers.contains(layer) else { throw KVCacheError.layerOutOfRange(layer: layer, layers: geometry.layers) }
        let s = layer - geometry.layers.lowerBound, start = counts[s]
        guard start + n <= geometry.capacity else {
            throw KVCacheError.full(layer: layer, capacity: geometry.capacity, needed: start + n)
        }
        guard n > 0 else { return }
        let width = geometry.rowWidth, recent = codec.settings.recentTokens
        let keys = keysToCode(layer: s, k, count: n)
        let values = Array(UnsafeBufferPointer(start: v, count: n * width))
        // The first append (the prompt) chooses the online atoms, also when a buffer holds all of it.
        let ks = keyStreams[s], vs = valueStreams[s]
        try keys.withUnsafeBufferPointer { try ks.settleOnlineAtoms($0.baseAddress!, count: n * width / ks.m) }
        try vs.settleOnlineAtoms(v, count: n * width / vs.m)
        // Tokens coded now: every new one without a buffer; with `recent=W` those leaving it
        // (their stored fp16 rows) and new ones that never enter it.
        let coded = codedTokens(s), end = recent > 0 ? max(coded, start + n - recent) : start + n
        if end > coded {
            var codeKeys: [Float] = [], codeValues: [Float] = []
            if coded < start {
                guard let p = pending[s], p.start <= coded, p.start + p.count == start else {
                    preconditionFailure("layer \(layer): the recent= buffer does not hold tokens \(coded)..<\(start)")
                }
                let leaving = Self.rounded(p, coded..<min(start, end), width: width, form: bufferForm)
                (codeKeys, codeValues) = (leaving.keys, leaving.values)
            }
            let a = (max(coded, start) - start) * width, b = (end - start) * width
            if a < b {
                codeKeys += keys[a..<b]
                codeValues += values[a..<b]
            }
            try code(layer: s, keys: codeKeys, values: codeValues, tokens: end - coded)
        }
        pending[s] = Self.exactRows(keeping: pending[s], from: end, width: width, form: bufferForm,
                                    appending: (start, n, keys, values, 0))
        counts[s] = start + n
    }

    /// `n` tokens' keys (pre-RoPE) as layer slot `s`'s streams code and hold them: scaled
    /// by the key metric when the dictionary has one.
    func keysToCode(layer s: Int, _ k: UnsafePointer<Float>, count n: Int) -> [Float] {
        var keys = Array(UnsafeBufferPointer(start: k, count: n * geometry.rowWidth))
        if let scales = keyScales?[s].forward {
            keys.withUnsafeMutableBufferPointer { CSRKeyMetric.scaleRows($0.baseAddress!, rows: n, by: scales) }
        }
        return keys
    }

    /// Codes `tokens` tokens' rows (pre-RoPE keys, scaled) onto layer slot `s`'s streams.
    /// (n, kvHeads, headDim) is (n * kvHeads * s_n, headDim / s_n): rows in (token, head, chunk) order.
    private func code(layer s: Int, keys: [Float], values: [Float], tokens n: Int) throws {
        let width = n * geometry.rowWidth, ks = keyStreams[s], vs = valueStreams[s]
        if codesOnThreads(layer: s, tokens: n) {
            return try Self.appendCodedTogether(ks, keys: keys, vs, values: values, threads: ComputeThreads.count)
        }
        try keys.withUnsafeBufferPointer { try ks.append($0.baseAddress!, count: width / ks.m) }
        try values.withUnsafeBufferPointer { try vs.append($0.baseAddress!, count: width / vs.m) }
    }

    /// Whether `n` new tokens of layer slot `s` are coded as ``DecodeCoding``'s units on the
    /// compute threads: a decode step's few tokens, two threads or more, online atoms settled.
    func codesOnThreads(layer s: Int, tokens n: Int) -> Bool {
        n <= FusedAttention.decodeTokens && ComputeThreads.count > 1 && keyStreams[s].codesApart && valueStreams[s].codesApart
    }

    /// Tokens of layer slot `s` whose codes the streams hold: all of them without
    /// `recent=`; with it, all but those only the buffer holds.
    func codedTokens(_ s: Int) -> Int { keyStreams[s].rows / (geometry.rowWidth / keyStreams[s].m) }

    /// How the `recent=` buffer stores its rows.
    var bufferForm: CSRBufferForm { CSRBufferForm(codec.settings, headDim: geometry.headDim) }

    /// The exact rows after appending `new`: its own, preceded by the rows of `old` (when
    /// they end where `new` starts) from position `coded` on (those not coded, in stored form).
    static func exactRows(keeping old: ExactRows?, from coded: Int, width: Int, form: CSRBufferForm,
                          appending new: ExactRows) -> ExactRows {
        let start = new.start
        guard let old, old.start + old.count == start else { return new }
        let from = max(old.start, coded)
        guard from < start else { return new }
        let kept = rounded(old, from..<start, width: width, form: form)
        return (kept.start, kept.count + new.count, kept.keys + new.keys, kept.values + new.values, kept.count + new.rounded)
    }

    /// Rows `positions` of `p` (within it) in their stored form; rows already rounded are
    /// copied.
    static func rounded(_ p: ExactRows, _ positions: Range<Int>, width: Int, form: CSRBufferForm) -> ExactRows {
        guard !positions.isEmpty else { return (positions.lowerBound, 0, [], [], 0) }
        let a = (positions.lowerBound - p.start) * width, b = (positions.upperBound - p.start) * width
        let done = min(b, max(a, p.rounded * width))
        func stored(_ x: [Float]) -> [Float] { Array(x[a..<done]) + form.stored(x[done..<b]) }
        return (positions.lowerBound, positions.count, stored(p.keys), stored(p.values), positions.count)
    }

    /// Without a `recent=` buffer the exact rows serve only the attention of the append
    /// that made them (its tokens see each other exactly); a 512-token prefill chunk's are
    /// 0.8 MB a layer of SmolLM2, which stayed until the next append. With a buffer they
    /// hold the buffer and stay.
    public func finishedAttending(layer: Int) {
        guard codec.settings.recentTokens == 0, !keepsLatestExactRows, geometry.layers.contains(layer) else { return }
        pending[layer - geometry.layers.lowerBound] = nil
    }

    /// Rows of the `recent=` buffer that are stored (and counted): the tokens not coded yet,
    /// which the exact rows hold (they end at the layer's count).
    func storedRecentTokens(layer s: Int) -> Int { codec.settings.recentTokens > 0 ? counts[s] - codedTokens(s) : 0 }

    /// Sets layer slot `s`'s exact rows to `n` stored rows from position `first`, after rows
    /// it holds from its first uncoded token on (as an append does); none when `n` is 0.
    func takeRecentRows(layer s: Int, first: Int, count n: Int, keys: [Float], values: [Float]) {
        guard n > 0 else { pending[s] = nil; return }
        pending[s] = Self.exactRows(keeping: pending[s], from: codedTokens(s), width: geometry.rowWidth, form: bufferForm,
                                    appending: (first, n, keys, values, n))
    }

    /// Writes layer slot `s`'s `recent=` rows among `tokens` (those not coded, which the
    /// exact rows hold; `tokens` end at the layer's count): u32 count, then keys and values
    /// as ``CSRBufferForm/write(_:to:)`` writes them (the latest append's exact rows in the
    /// form the next append will store them in).
    func writeRecentRows(layer s: Int, tokens: Range<Int>, to w: inout BinaryWriter) {
        var keys: ArraySlice<Float> = [], values: ArraySlice<Float> = []
        let from = max(tokens.lowerBound, codedTokens(s))
        if from < tokens.upperBound {
            guard let p = pending[s], p.start <= from, p.start + p.count == tokens.upperBound else {
                preconditionFailure("the recent= buffer does not hold tokens \(from)..<\(tokens.upperBound)")
            }
            let a = (from - p.start) * geometry.rowWidth, b = (tokens.upperBound - p.start) * geometry.rowWidth
            (keys, values) = (p.keys[a..<b], p.values[a..<b])
        }
        w.write(UInt32(keys.count / geometry.rowWidth))
        bufferForm.write(keys, to: &w)
        bufferForm.write(values, to: &w)
    }

    /// Reads what ``writeRecentRows(layer:tokens:to:)`` wrote for `tokens` tokens ending at
    /// `end`, of which those from `codedEnd` on are not coded (the rows it must hold):
    /// (first position, rows, keys, values as stored).
    static func readRecentRows(_ r: inout BinaryReader, settings: CSRSettings, width: Int, headDim: Int, tokens: Int, end: Int,
                               codedEnd: Int) throws -> (first: Int, count: Int, keys: [Float], values: [Float]) {
        let expected = end - max(end - tokens, codedEnd)
        let n = Int(try r.read(UInt32.self, "recent row count"))
        guard n <= min(tokens, settings.recentTokens), n == expected else {
            throw KVCacheError.malformedPayload("\(n) recent rows for \(tokens) tokens with recent=\(settings.recentTokens), \(expected) expected")
        }
        let form = CSRBufferForm(settings, headDim: headDim)
        let k = try form.read(&r, count: n * width, "recent keys"), v = try form.read(&r, count: n * width, "recent values")
        return (end - n, n, k, v)
    }

    /// A decode step's keys and values (`width` floats each) coded on the compute threads,
    /// then stored. The pursuit is most of an append's time and would otherwise keep the
    /// other threads idle between the step's products (``DecodeCoding``). A row's pairs do
    /// not depend on the rows coded with it, so the codes are the ones a serial append stores.
    static func appendCodedTogether(_ ks: CSRCodeStream, keys: [Float], _ vs: CSRCodeStream, values: [Float],
                                    threads: Int) throws {
        let coding = try DecodeCoding(ks, keys: keys, vs, values: values)
        ComputePool.shared.perform(iterations: coding.units, threads: threads) { coding.run(unit: $0) }
        try coding.store()
    }

    /// ``appendCodedTogether(_:keys:_:values:threads:)`` on `width` floats of keys and of values.
    static func appendCodedTogether(_ ks: CSRCodeStream, _ k: UnsafePointer<Float>, _ vs: CSRCodeStream,
                                    _ v: UnsafePointer<Float>, width: Int, threads: Int) throws {
        try appendCodedTogether(ks, keys: Array(UnsafeBufferPointer(start: k, count: width)),
                                vs, values: Array(UnsafeBufferPointer(start: v, count: width)), threads: threads)
    }

    // MARK: - Reading

    public func withKeysAndValues<R>(
        layer: Int, kvHead h: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int) throws -> R
    ) rethrows -> R {
        let s = layer - geometry.layers.lowerBound, n = counts[s], d = geometry.headDim
        if keyScratch.count < n * d {
            keyScratch = [Float](repeating: 0, count: n * d)
            valueScratch = keyScratch
        }
        keyScratch.withUnsafeMutableBufferPointer { kb in
            valueScratch.withUnsafeMutableBufferPointer { vb in
                decode(keyStreams[s], head: h, tokens: codedTokens(s), into: kb.baseAddress!)
                decode(valueStreams[s], head: h, tokens: codedTokens(s), into: vb.baseAddress!)
                if let p = pending[s] {
                    let width = geometry.rowWidth
                    for t in 0..<p.count {
                        for i in 0..<d {
                            kb[(p.start + t) * d + i] = p.keys[t * width + h * d + i]
                            vb[(p.start + t) * d + i] = p.values[t * width + h * d + i]
                        }
                    }
                }
                if let inverse = keyScales?[s].inverse {
                    for t in 0..<n { for i in 0..<d { kb[t * d + i] *= inverse[h * d + i] } }
                }
                rotate(kb.baseAddress!, tokens: n)
            }
        }
        return try keyScratch.withUnsafeBufferPointer { kb in
            try valueScratch.withUnsafeBufferPointer { vb in try body(kb.baseAddress!, vb.baseAddress!, n) }
        }
    }

    /// Head `h`'s vectors for tokens 0 ..< n, (n, headDim), from codes and guard bank.
    private func decode(_ stream: CSRCodeStream, head h: Int, tokens n: Int, into out: UnsafeMutablePointer<Float>) {
        let m = stream.m, chunks = geometry.headDim / m, heads = geometry.kvHeads
        stream.atomBits.withUnsafeBufferPointer { a in
            stream.indexBytes.withUnsafeBufferPointer { ib in
                guard let ap = a.baseAddress, let ip = ib.baseAddress else { return }
                for t in 0..<n {
                    for c in 0..<chunks {
                        stream.decodeRow((t * heads + h) * chunks + c, into: out + t * geometry.headDim + c * m,
                                         atoms: ap, indexBytes: ip)
                    }
                }
            }
        }
        for (g, row) in stream.guardRows.enumerated() {
            let r = Int(row), c = r % chunks, head = (r / chunks) % heads, t = r / (chunks * heads)
            guard head == h, t < n else { continue }
            for i in 0..<m { out[t * geometry.headDim + c * m + i] = HalfPrecision.float(stream.guardValues[g * m + i]) }
        }
    }

    /// RoPE on n rows of one head, row t at position t, from the shared table.
    private func rotate(_ x: UnsafeMutablePointer<Float>, tokens n: Int) {
        let half = rope.ropeDimension / 2, d = geometry.headDim
        ropeTable.withUnsafeBufferPointer { tb in
            for t in 0..<n {
                let row = x + t * d, cs = tb.baseAddress! + t * half * 2
                for i in 0..<half {
                    let c = cs[2 * i], s = cs[2 * i + 1]
                    let a = row[2 * i], b = row[2 * i + 1]
                    row[2 * i] = a * c - b * s
                    row[2 * i + 1] = a * s + b * c
                }
            }
        }
    }

    // MARK: - Accounting and truncation

    /// Bytes of the layer's codes in their stored and transferred form (what
    /// ``serialize(layers:)`` writes, less framing): with fixed sparsity and no entropy
    /// coding, exactly what memory holds; with `err=` only the pairs each row uses and its
    /// count, with `ec=rans` the rANS-coded indices. See ``residentByteCount``.
    public func byteCount(layer: Int) -> Int {
        guard geometry.layers.contains(layer) else { return 0 }
        let s = layer - geometry.layers.lowerBound
        return keyStreams[s].byteCount + valueStreams[s].byteCount + storedRecentTokens(layer: s) * 2 * bufferForm.bytes(width: geometry.rowWidth)
    }

    /// Bytes the codes take in memory, where every row keeps `sparsity` fixed-width slots
    /// for the fused attention (and, with `err=`, a count byte per row).
    /// With `recent=W`, the buffer's rows are held as fp32 for the kernel.
    public var residentByteCount: Int {
        (keyStreams + valueStreams).reduce(0) { $0 + $1.residentByteCount }
            + counts.indices.reduce(0) { $0 + storedRecentTokens(layer: $1) * geometry.rowWidth * 2 * 4 }
    }

    /// Bytes of the online atoms and guard banks over all layers (part of ``byteCount``).
    public var onlineAndGuardByteCount: Int {
        (keyStreams + valueStreams).reduce(0) { $0 + $1.onlineAtoms.count * 2 + $1.guardRows.count * 4 + $1.guardValues.count * 2 }
    }

    public func truncate(to count: Int) {
        let count = max(0, count)
        for s in counts.indices where counts[s] > count {
            let rowsPerToken = geometry.rowWidth, coded = min(codedTokens(s), count)
            keyStreams[s].truncate(rows: coded * rowsPerToken / keyStreams[s].m)
            valueStreams[s].truncate(rows: coded * rowsPerToken / valueStreams[s].m)
            // The recent= buffer keeps its uncoded rows below `count`, in their stored
            // form. Tokens that had left it stay coded: cut back by one token (a resumed
            // session), the next append codes nothing and leaves the cache what it would have been.
            pending[s] = pending[s].flatMap { p in
                guard coded < count else { return nil }
                precondition(p.start <= coded, "the recent= buffer does not hold tokens \(coded)..<\(count)")
                return Self.rounded(p, coded..<count, width: rowsPerToken, form: bufferForm)
            }
            counts[s] = count
        }
    }
}

/// The pursuit of a decode step's new rows as units for the compute threads, and the
/// stores of their pairs once all have run (``CSRCache/appendCodedTogether`` and
/// ``CSRCache/appendAndAttend``, where the units run beside the step's attention units).
/// The keys' rows are one unit and the values' two: rows of a unit step together, reading
/// the dictionary once per step for all of them (keys: 256 KB of atoms), so a key row
/// more in a unit costs little, while a second key unit would read all the atoms again on
/// the other core. The key unit, the longest, is unit 0, so that it starts first.
///
/// Safe to send: the encoders and the rows are only read, and each unit writes only its
/// own rows' pairs; `store` runs after every unit.
final class DecodeCoding: @unchecked Sendable {
    let units: Int
    private let ks: CSRCodeStream, vs: CSRCodeStream
    private let keyEncoder: MatchingPursuitEncoder, valueEncoder: MatchingPursuitEncoder
    private let keyRows: Int, valueRows: Int, perValueUnit: Int
    /// (rows, m) the rows to code, only read
    private let keys: [Float], values: [Float]
    /// (rows, s) their pairs. Raw storage: the units write disjoint rows of it at once.
    private let ki: UnsafeMutableBufferPointer<UInt16>, kc: UnsafeMutableBufferPointer<Float>
    private let vi: UnsafeMutableBufferPointer<UInt16>, vc: UnsafeMutableBufferPointer<Float>

    init(_ ks: CSRCodeStream, keys: [Float], _ vs: CSRCodeStream, values: [Float]) throws {
        (self.ks, self.vs, self.keys, self.values) = (ks, vs, keys, values)
        keyEncoder = try ks.pursuitEncoder()
        valueEncoder = try vs.pursuitEncoder()
        keyRows = keys.count / ks.m
        valueRows = values.count / vs.m
        perValueUnit = max(1, (valueRows + 1) / 2)
        units = 1 + (valueRows + perValueUnit - 1) / perValueUnit
        ki = .allocate(capacity: keyRows * ks.sparsity)
        kc = .allocate(capacity: keyRows * ks.sparsity)
        vi = .allocate(capacity: valueRows * vs.sparsity)
        vc = .allocate(capacity: valueRows * vs.sparsity)
    }

    deinit {
        kc.deallocate()
        vc.deallocate()
        ki.deallocate()
        vi.deallocate()
    }

    /// Codes unit u's rows: the keys (u = 0) or a part of the values.
    func run(unit u: Int) {
        if u == 0 { return Self.code(keyEncoder, keys, rows: 0..<keyRows, ki, kc) }
        let r0 = (u - 1) * perValueUnit
        Self.code(valueEncoder, values, rows: r0..<min(valueRows, r0 + perValueUnit), vi, vc)
    }

    /// Appends the pairs to the streams (with their guard checks, as a serial append).
    func store() throws {
        var (kIndices, kCoefficients) = (Array(ki), Array(kc)), (vIndices, vCoefficients) = (Array(vi), Array(vc))
        try keys.withUnsafeBufferPointer { try ks.append($0.baseAddress!, count: keyRows, coded: &kIndices, &kCoefficients) }
        try values.withUnsafeBufferPointer { try vs.append($0.baseAddress!, count: valueRows, coded: &vIndices, &vCoefficients) }
    }

    private static func code(_ encoder: MatchingPursuitEncoder, _ x: [Float], rows r: Range<Int>,
                             _ indices: UnsafeMutableBufferPointer<UInt16>, _ coefficients: UnsafeMutableBufferPointer<Float>) {
        let m = encoder.dictionary.dimension, s = encoder.options.sparsity
        x.withUnsafeBufferPointer {
            encoder.encode(count: r.count, vectors: $0.baseAddress! + r.lowerBound * m, indices: indices.baseAddress! + r.lowerBound * s,
                           coefficients: coefficients.baseAddress! + r.lowerBound * s)
        }
    }
}
