import Testing
@testable import SparseKVEngine
import SparseCoding

/// `buffer=i8`: the `recent=` buffer's rows as int8 with an fp16 scale per head vector.
@Suite struct CSRBufferFormTests {
    typealias F = CSRFixture

    static let form = CSRBufferForm(format: .int8, scaleChannels: 16)

    /// Head vectors of very different sizes: ordinary, large, one outlier, all zero, and one
    /// whose peak is below what a normal fp16 scale can carry.
    static func vectors() -> [Float] {
        var g = SeededGenerator(seed: 17)
        var x: [Float] = []
        for size: Float in [1, 2, 300, 0.05, 7] { x += (0..<16).map { _ in Float.random(in: -size...size, using: &g) } }
        var outlier = (0..<16).map { _ in Float.random(in: -0.1...0.1, using: &g) }
        outlier[5] = -40
        x += outlier
        x += [Float](repeating: 0, count: 16)
        x += (0..<16).map { _ in Float.random(in: -1e-3...1e-3, using: &g) }
        return x
    }

    @Test func int8RowsAreCloseAndStoreAgainUnchanged() throws {
        let x = Self.vectors(), y = Self.form.stored(x[...])
        #expect(y.count == x.count)
        for v in 0..<x.count / 16 {
            let row = Array(x[v * 16..<(v + 1) * 16]), got = Array(y[v * 16..<(v + 1) * 16])
            let peak = row.map(abs).max()!
            if peak < 127 * Float(Float16.leastNormalMagnitude) {
                #expect(got.allSatisfy { $0 == 0 }, "vector \(v): a peak of \(peak) is stored as zeros")
            } else {
                // Rounding to q * s with s within 2^-11 of peak / 127: at most half a step off.
                #expect(maxAbsDiff(row, got) <= peak / 254 * (1 + 1e-3), "vector \(v)")
                #expect(got.map(abs).max()! == 127 * Float(Float16(peak / 127)), "vector \(v): its peak is q = ±127")
            }
        }
        // Stored values store as themselves, bit for bit (the held rows, the wire form and a
        // replica's rows agree).
        #expect(Self.form.stored(y[...]).map(\.bitPattern) == y.map(\.bitPattern))
    }

    @Test func wireFormRoundTripsAndIsCounted() throws {
        let x = Self.vectors(), y = Self.form.stored(x[...])
        for form in [Self.form, CSRBufferForm(format: .float16, scaleChannels: 16)] {
            var w = BinaryWriter()
            form.write(form.stored(x[...])[...], to: &w)
            // A token of 2 heads of 16: int8 32 + 2 scales * 2 = 36 bytes, fp16 64.
            #expect(w.bytes.count == x.count / 32 * form.bytes(width: 32))
            let back = try w.bytes.withUnsafeBytes { raw in
                var r = BinaryReader(raw)
                return try form.read(&r, count: x.count, "rows")
            }
            #expect(back == form.stored(x[...]))
        }
        #expect(CSRBufferForm(format: .int8, scaleChannels: 64).bytes(width: 192) == 198 && CSRBufferForm(format: .float16, scaleChannels: 64).bytes(width: 192) == 384)
        var w = BinaryWriter()
        Self.form.write(y[...], to: &w)
        let written = w.bytes
        // Scales that are not finite, negative or below fp16's normal numbers, and q = -128, are refused.
        for (offset, bytes) in [(0, Float16.infinity.bitPattern), (2, Float16.nan.bitPattern), (4, Float16(-1).bitPattern),
                                (6, Float16.leastNonzeroMagnitude.bitPattern)] {
            var bad = written
            bad[offset] = UInt8(bytes & 0xff)
            bad[offset + 1] = UInt8(bytes >> 8)
            #expect(throws: KVCacheError.self) {
                try bad.withUnsafeBytes { raw in
                    var r = BinaryReader(raw)
                    return try Self.form.read(&r, count: y.count, "rows")
                }
            }
        }
        var bad = written
        bad[x.count / 16 * 2 + 3] = 0x80
        #expect(throws: KVCacheError.self) {
            try bad.withUnsafeBytes { raw in
                var r = BinaryReader(raw)
                return try Self.form.read(&r, count: y.count, "rows")
            }
        }
    }

    /// The buffer of a `buffer=i8` cache: its rows read within half an int8 step of the
    /// exact ones, tokens leaving it are coded from those rows, it is counted at 8 bits plus
    /// a scale per head vector, and the transfer carries it.
    @Test func int8BufferIsReadCountedAndCarried() throws {
        let half = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5 }
        let codec = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5; $0.recentFormat = .int8 }
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), fp16 = half.makeCache(geometry: F.geometry, rope: F.rope)
        let dense = DenseKVCache<Float>(geometry: F.geometry, rope: F.rope)
        let (k, v) = try F.promptThenThreeTokens([csr, fp16, dense]), w = F.geometry.rowWidth, d = F.d
        // Values of at most 2: half a step is at most 2 / 254 (keys rotated: at most sqrt(2) times that).
        let (ck, cv) = F.read(csr, layer: 1, head: 0), (dk, dv) = F.read(dense, layer: 1, head: 0)
        #expect(maxAbsDiff(Array(cv[10 * d..<14 * d]), Array(dv[10 * d..<14 * d])) <= 2 / 254 * 1.001)
        #expect(maxAbsDiff(Array(ck[10 * d..<14 * d]), Array(dk[10 * d..<14 * d])) <= 2 * 1.4143 / 254 * 1.001)
        #expect(maxAbsDiff(Array(cv[10 * d..<14 * d]), Array(dv[10 * d..<14 * d])) > 1e-3, "int8, not fp16")
        #expect(maxAbsDiff(Array(ck[(14 * d)...]), Array(dk[(14 * d)...])) < 1e-5, "the latest token exact")
        // Tokens 7, 8 and 9 were coded from their int8 rows as the next three pushed them out.
        let plain = try F.randomCodec(atoms: 8, seed: 5), alike = plain.makeCache(geometry: F.geometry, rope: F.rope)
        var kk = Array(k[0..<10 * w]), vv = Array(v[0..<10 * w])
        kk.replaceSubrange(7 * w..<10 * w, with: Self.form.stored(kk[7 * w..<10 * w]))
        vv.replaceSubrange(7 * w..<10 * w, with: Self.form.stored(vv[7 * w..<10 * w]))
        try F.fill(alike, kk, vv, batch: 10)
        try F.fill(alike, F.rows(1, seed: 999), F.rows(1, seed: 998), batch: 1)
        let (ak, av) = F.read(alike, layer: 1, head: 0)
        #expect(Array(ck[0..<10 * d]) == Array(ak[0..<10 * d]) && Array(cv[0..<10 * d]) == Array(av[0..<10 * d]))
        // The same codes' bytes; 5 buffered tokens per layer at w + 2 scales of 2 bytes each, not 2w bytes.
        #expect(csr.byteCount == fp16.byteCount - 2 * 2 * 5 * (2 * w - (w + 2 * 2)))
        // (The original still reads its latest token exactly; the copy has it as stored.)
        let copy = try Self.expectCarried(csr, codec: codec, refusedBy: half)
        #expect(F.read(copy, layer: 1, head: 1) == F.read(csr, layer: 1, head: 1))
    }

    /// `csr`'s full transfer: the copy counts the same bytes, a cache of `other` settings
    /// refuses it, and after 3 more tokens each the two serialize alike. Returns the copy.
    static func expectCarried(_ csr: CSRCache, codec: CSRCodec, refusedBy other: CSRCodec) throws -> CSRCache {
        let copy = try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: codec)
        #expect(copy.byteCount == csr.byteCount)
        #expect(throws: KVCacheError.self) { try CSRCache.deserialize(try csr.serialize(layers: 0..<2), capacity: 256, rope: F.rope, codec: other) }
        let more = F.rows(3, seed: 8)
        for c in [csr, copy] { try F.fill(c, more, more, batch: 1) }
        #expect(try copy.serialize(layers: 0..<2) == csr.serialize(layers: 0..<2))
        return copy
    }

    /// A `buffer=i8g8` cache (head vectors of 16: two scales each): counted with its scales,
    /// carried by a transfer, and refused by a cache with one scale per head vector.
    @Test func groupedBufferIsCountedAndCarried() throws {
        let perVector = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5; $0.recentFormat = .int8 }
        let codec = try F.randomCodec(atoms: 8, seed: 5) { $0.recentTokens = 5; $0.recentFormat = .int8; $0.bufferGroup = 8 }
        let csr = codec.makeCache(geometry: F.geometry, rope: F.rope), one = perVector.makeCache(geometry: F.geometry, rope: F.rope)
        _ = try F.promptThenThreeTokens([csr, one])
        // 5 buffered tokens per layer, keys and values, 2 heads: one more 2-byte scale per head.
        #expect(csr.byteCount == one.byteCount + 2 * 2 * 5 * 2 * 2)
        _ = try Self.expectCarried(csr, codec: codec, refusedBy: perVector)
    }

    @Test func settingsParse() throws {
        let s = try CSRSettings(parsing: "csr:8,coef=i6,recent=32,buffer=i8,sink=4")
        #expect(s.recentFormat == .int8 && s.description == "csr:k=8,v=4,coef=i6,recent=32,buffer=i8,sink=4")
        #expect(try CSRSettings(parsing: s.description) == s)
        #expect(try CSRSettings(parsing: "8,recent=32,buffer=f16") == CSRSettings(parsing: "8,recent=32"))
        for bad in ["8,buffer=i8", "8,recent=4,buffer=i4", "8,recent=4,buffer=", "8,recent=4,buffer=i8g12",
                    "8,recent=4,buffer=i8g", "8,recent=4,buffer=i8g64", "8,buffer=i8g16"] {
            #expect(throws: CSRError.self, "\(bad)") { try CSRSettings(parsing: bad) }
        }
        let g = try CSRSettings(parsing: "csr:8,recent=32,buffer=i8g16")
        #expect(g.recentFormat == .int8 && g.bufferGroup == 16 && g.description == "csr:k=8,v=4,recent=32,buffer=i8g16")
        #expect(try CSRSettings(parsing: g.description) == g)
        #expect(try g != CSRSettings(parsing: "csr:8,recent=32,buffer=i8"))
        // The last buffer= wins, group and all.
        #expect(try CSRSettings(parsing: "csr:8,recent=32,buffer=i8g16,buffer=i8") == CSRSettings(parsing: "csr:8,recent=32,buffer=i8"))
        #expect(try CSRSettings(parsing: "csr:8,recent=32,buffer=i8g16,buffer=f16") == CSRSettings(parsing: "csr:8,recent=32"))
    }

    /// `buffer=i8gN`: a scale per N channels. A vector with one large channel keeps the rest
    /// of its groups at their own step (half a step of the group's peak), and each group is
    /// counted with its own scale.
    @Test func groupScalesKeepSmallChannelsFine() throws {
        let settings = try CSRSettings(parsing: "csr:8,recent=4,buffer=i8g8")
        let grouped = CSRBufferForm(settings, headDim: 16)
        #expect(grouped.scaleChannels == 8)
        #expect(CSRBufferForm(try CSRSettings(parsing: "csr:8,recent=4,buffer=i8"), headDim: 16).scaleChannels == 16)
        // Two heads of 16: 32 int8 values and 4 scales.
        #expect(grouped.bytes(width: 32) == 32 + 4 * 2)
        let x = Self.vectors(), y = grouped.stored(x[...]), whole = Self.form.stored(x[...])
        for v in 0..<x.count / 8 {
            let group = Array(x[v * 8..<(v + 1) * 8]), peak = group.map(abs).max()!
            guard peak >= 127 * Float(Float16.leastNormalMagnitude) else { continue }
            #expect(maxAbsDiff(group, Array(y[v * 8..<(v + 1) * 8])) <= peak / 254 * (1 + 1e-3), "group \(v)")
        }
        // The outlier vector (channel 5 at -40): its second group is 40 / 0.1 finer than with one scale.
        let outlier = 5 * 16
        #expect(maxAbsDiff(Array(x[outlier + 8..<outlier + 16]), Array(y[outlier + 8..<outlier + 16])) < 1e-3)
        #expect(maxAbsDiff(Array(x[outlier + 8..<outlier + 16]), Array(whole[outlier + 8..<outlier + 16])) > 1e-2)
        #expect(grouped.stored(y[...]).map(\.bitPattern) == y.map(\.bitPattern))
        var w = BinaryWriter()
        grouped.write(y[...], to: &w)
        #expect(w.bytes.count == x.count / 32 * grouped.bytes(width: 32))
        let back = try w.bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            return try grouped.read(&r, count: x.count, "rows")
        }
        #expect(back == y)
    }
}
