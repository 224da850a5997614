import CShims
import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Keys with int8 coefficients rebuilt from fixed-point atoms (`csr_keys.h`,
/// ``FixedPointAtoms``): the conversion, the three kernel versions against each other bit
/// for bit, and the portable one against a float64 computation of the same scores.
@Suite struct CSRFixedPointKeyTests {
    static let levels: [CSRKeyKernels.Level] = {
        var l: [CSRKeyKernels.Level] = [.portable]
        #if arch(x86_64)
        if sparsekv_cpu_has_avx2() != 0 { l.append(.avx2) }
        if sparsekv_cpu_has_avx512vnni() != 0 { l.append(.avx512) }
        #endif
        return l
    }()

    /// (count, m) fp16 bits of random atoms with values in -limit ... limit.
    static func atomBits(count: Int, m: Int, limit: Float, seed: UInt64) -> [UInt16] {
        var g = SeededGenerator(seed: seed)
        return (0..<count * m).map { _ in HalfPrecision.bits(Float.random(in: -limit...limit, using: &g)) }
    }

    @Test func atomsAreTheFp16AtomsRoundedToFixedPoint() throws {
        let dict = try SparseDictionary(randomAtomCount: 64, dimension: 64, seed: 5)
        let bits = dict.atoms.map { HalfPrecision.bits($0) }
        let fixed = try #require(FixedPointAtoms(bits: bits, m: 64))
        // Unit atoms of 64 random channels stay below 1: shift 15.
        #expect(fixed.unit == 0x1p-15)
        var worst: Float = 0
        for a in 0..<64 {
            for c in 0..<64 {
                let x = HalfPrecision.float(bits[a * 64 + c]), v = fixed.value(atom: a, channel: c, m: 64)
                #expect(v == Int16((x * 32768).rounded()))
                worst = max(worst, abs(Float(v) * fixed.unit - x))
            }
        }
        #expect(worst <= 0x1p-16)
        // A value of 1 does not fit at 2^15: shift 14. A value of 2 fits nowhere; nor does m = 48.
        var one = bits
        one[3] = HalfPrecision.bits(1)
        #expect(FixedPointAtoms(bits: one, m: 64)?.unit == 0x1p-14)
        one[3] = HalfPrecision.bits(-2)
        #expect(FixedPointAtoms(bits: one, m: 64) == nil)
        #expect(FixedPointAtoms(bits: Array(bits.prefix(48 * 10)), m: 48) == nil)
    }

    /// The stored order puts channel c where `sparsekv_fixed_position` says, a permutation;
    /// the split order is one too.
    @Test func storedAndSplitOrdersArePermutations() {
        for m in [32, 64] {
            let positions = (0..<m).map { sparsekv_fixed_position($0) }
            #expect(Set(positions) == Set(0..<m))
        }
        // Lane 1 of the first 32-word block holds the even channels 8 ... 14, then the odd 9 ... 15.
        #expect((8..<16).map { p in (0..<64).first { sparsekv_fixed_position($0) == p }! } == [8, 10, 12, 14, 9, 11, 13, 15])
        #expect(Set((0..<64).map { sparsekv_split_channel($0) }) == Set(0..<64))
        // Even channels of pairs 0 ..< 16, their odd channels, then pairs 16 ..< 32 alike.
        #expect([0, 1, 15, 16, 17, 31, 32, 48, 63].map { sparsekv_split_channel($0) } == [0, 2, 30, 1, 3, 31, 32, 33, 63])
    }

    /// A row (64 floats) in split order.
    static func split(_ row: [Float]) -> [Float] { (0..<64).map { row[sparsekv_split_channel($0)] } }

    /// Random codes for `positions` positions of `chunks` chunks of s pairs.
    struct Codes {
        var idx: [Int32], coef: [Int8], scales: [UInt16]
        init(positions: Int, chunks: Int, s: Int, atoms: Int, seed: UInt64) {
            var g = SeededGenerator(seed: seed)
            let rows = positions * chunks
            idx = (0..<rows * s).map { _ in Int32.random(in: 0..<Int32(atoms), using: &g) }
            // The extremes of int8 included.
            coef = (0..<rows * s).map { i in i % 7 == 0 ? (i % 2 == 0 ? 127 : -128) : Int8.random(in: -127...127, using: &g) }
            scales = (0..<rows).map { _ in HalfPrecision.bits(Float.random(in: 0.001...0.5, using: &g)) }
        }
    }

    @Test func rowKernelsAreTheExactIntegerSums() throws {
        for m in [32, 64] {
            for s in [1, 2, 3, 5, 8, 16, 32] {
                // Atoms over the whole int16 range: the largest sums the kernels can meet.
                let bits = Self.atomBits(count: 40, m: m, limit: 0.99, seed: UInt64(m + s))
                let fixed = try #require(FixedPointAtoms(bits: bits, m: m))
                let rows = 5, codes = Codes(positions: rows, chunks: 1, s: s, atoms: 40, seed: UInt64(s))
                var expected = [Float](repeating: 0, count: rows * m)
                for r in 0..<rows {
                    let w = HalfPrecision.float(codes.scales[r]) * fixed.unit
                    for c in 0..<m {
                        var sum = 0
                        for k in 0..<s {
                            sum += Int(codes.coef[r * s + k]) * Int(fixed.value(atom: Int(codes.idx[r * s + k]), channel: c, m: m))
                        }
                        expected[r * m + c] = Float(sum) * w
                    }
                }
                for level in Self.levels {
                    var got = [Float](repeating: .nan, count: rows * m)
                    CSRKeyKernels.rows(fixed.atoms.baseAddress, m: m, sparsity: s, indices: storageBase(codes.idx),
                                       coefficients: storageBase(codes.coef), scales: storageBase(codes.scales), unit: fixed.unit,
                                       count: rows, into: &got, level: level)
                    #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "m \(m) s \(s) \(level)")
                }
            }
        }
    }

    /// The block kernel's partials at every level, bit for bit, and their sums against a
    /// float64 score of the same rows: fixed-point sums, scale, RoPE, query dot.
    @Test func blockKernelsAgreeAndScoreTheRotatedRows() throws {
        let rope = RoPE(headDim: 64, ropeDimension: 64, base: 10000)
        let codec = try FusedAttentionTests.csrCodec(kvHeads: 1, int8: true)
        let table = codec.ropeTable(rope, capacity: 900), splitTable = codec.splitRopeTable(rope, capacity: 900)
        var g = SeededGenerator(seed: 9)
        for m in [32, 64] {
            let chunks = 64 / m
            for s in [1, 3, 4, 6, 8, 16] {
                let bits = Self.atomBits(count: 50, m: m, limit: 0.9, seed: UInt64(7 * m + s))
                let fixed = try #require(FixedPointAtoms(bits: bits, m: m))
                // Two KV heads' rows interleaved, as a stream holds them; head 1 is scored.
                let kvHeads = 2, head = 1, positions = 8
                let codes = Codes(positions: positions * kvHeads, chunks: chunks, s: s, atoms: 50, seed: UInt64(m * s))
                var idx = [Int32]()
                for j in 0..<positions {
                    let row0 = (j * kvHeads + head) * chunks
                    idx += codes.idx[row0 * s..<(row0 + chunks) * s]
                }
                // 1 ... 4 rows: the AVX-512 kernel with the row count fixed; 6 and 12 (a decode
                // step of 2 and 4 tokens): the same kernel with the rows read per position.
                for rows in [1, 2, 3, 4, 6, 12] {
                    let queries = (0..<rows).map { _ in (0..<64).map { _ in Float.random(in: -2...2, using: &g) } }
                    let first = Int.random(in: 0..<800, using: &g), n = Int.random(in: 1...8, using: &g)
                    let skip = UInt32.random(in: 0..<256, using: &g) & ~1  // position 0 always scored
                    var results: [[Float]] = []
                    for level in Self.levels {
                        var partial = [Float](repeating: -7, count: rows * 128)
                        let split = queries.map(Self.split)
                        let qp = split.map { storageBase($0) }
                        qp.withUnsafeBufferPointer { q in
                            var b = sparsekv_key_block(
                                atoms: fixed.atoms.baseAddress, m: m, s: s, idx: storageBase(idx),
                                coef: storageBase(codes.coef) + head * chunks * s, coefStride: kvHeads * chunks * s,
                                scales: storageBase(codes.scales) + head * chunks, scaleStride: kvHeads * chunks,
                                unit: fixed.unit, rope: splitTable.baseAddress + first * 64,
                                queries: UnsafeRawPointer(q.baseAddress!).assumingMemoryBound(to: UnsafePointer<Float>?.self),
                                rows: rows, n: n, skip: skip, partial: &partial)
                            withUnsafePointer(to: &b) { CSRKeyKernels.partials($0, level: level) }
                        }
                        withExtendedLifetime(split) {}  // qp points into the rows
                        results.append(partial)
                    }
                    for r in results.dropFirst() {
                        #expect(r.map(\.bitPattern) == results[0].map(\.bitPattern), "m \(m) s \(s) rows \(rows)")
                    }
                    let partial = results[0]
                    for j in 0..<8 {
                        for r in 0..<rows {
                            let lanes = partial[(r * 8 + j) * 16..<(r * 8 + j + 1) * 16]
                            if j >= n || skip >> j & 1 == 1 {
                                #expect(lanes.allSatisfy { $0 == -7 }, "position \(j) is left as it was")
                                continue
                            }
                            // Float64: the row from the fixed-point atoms, rotated, dotted.
                            var x = [Double](repeating: 0, count: 64)
                            for c in 0..<chunks {
                                let row = (j * kvHeads + head) * chunks + c
                                let w = Double(HalfPrecision.float(codes.scales[row])) * Double(fixed.unit)
                                for k in 0..<s {
                                    let a = Int(codes.idx[row * s + k]), q = Double(codes.coef[row * s + k])
                                    for i in 0..<m { x[c * m + i] += w * q * Double(fixed.value(atom: a, channel: i, m: m)) }
                                }
                            }
                            var dot = 0.0, size = 0.0
                            for p in 0..<32 {
                                let cs = Double(table[(first + j) * 64 + 2 * p]), sn = Double(table[(first + j) * 64 + 2 * p + 1])
                                let e = x[2 * p] * cs - x[2 * p + 1] * sn, o = x[2 * p] * sn + x[2 * p + 1] * cs
                                dot += Double(queries[r][2 * p]) * e + Double(queries[r][2 * p + 1]) * o
                                size += abs(Double(queries[r][2 * p]) * e) + abs(Double(queries[r][2 * p + 1]) * o)
                            }
                            let got = lanes.reduce(0.0) { $0 + Double($1) }
                            #expect(abs(got - dot) <= 1e-5 * max(size, 1), "m \(m) s \(s) position \(j): \(got) against \(dot)")
                        }
                    }
                }
            }
        }
    }

    /// Key streams with int8 coefficients read fixed-point atoms; values and fp16
    /// coefficients do not. Their rows stay within the rounding of the fp16 atoms' rows.
    @Test func keyStreamsWithInt8CoefficientsUseFixedPoint() throws {
        let g = KVCacheGeometry(layers: 0..<2, kvHeads: 2, headDim: 64, capacity: 64)
        let rope = RoPE(headDim: 64, ropeDimension: 64, base: 10000)
        let int8 = try #require(try FusedAttentionTests.csrCodec(kvHeads: 2, int8: true).makeCache(geometry: g, rope: rope) as? CSRCache)
        let f16 = try #require(try FusedAttentionTests.csrCodec(kvHeads: 2, int8: false).makeCache(geometry: g, rope: rope) as? CSRCache)
        #expect(int8.keyStreams.allSatisfy { $0.fixedAtoms != nil })
        // Every session's streams of a group share one copy of the offline atoms.
        let again = try #require(int8.codec.makeCache(geometry: g, rope: rope) as CSRCache?)
        #expect(int8.keyStreams[0].fixedAtoms!.atoms.baseAddress == again.keyStreams[0].fixedAtoms!.atoms.baseAddress)
        #expect(int8.valueStreams.allSatisfy { $0.fixedAtoms == nil })
        #expect((f16.keyStreams + f16.valueStreams).allSatisfy { $0.fixedAtoms == nil })

        let rows = FusedAttentionTests.rows(40, width: 128, seed: 12)
        try rows.withUnsafeBufferPointer { try int8.append(layer: 0, keys: $0.baseAddress!, values: $0.baseAddress!, count: 40) }
        let stream = int8.keyStreams[0], fixed = try #require(stream.fixedAtoms)
        // With online atoms the stream's own copy covers them too.
        #expect(fixed.atoms.count == stream.atomBits.count)
        var got = [Float](repeating: 0, count: 64), worst: Float = 0
        for r in 0..<stream.rows {
            stream.atomBits.withUnsafeBufferPointer { a in
                stream.indexBytes.withUnsafeBufferPointer { ib in
                    stream.decodeRow(r, into: &got, atoms: a.baseAddress!, indexBytes: ib.baseAddress!)
                }
            }
            // The same row from the fp16 atoms, and the bound: each pair's atom moves by at most unit / 2.
            var fp16 = [Double](repeating: 0, count: 64), bound = 0.0
            let scale = Double(HalfPrecision.float(stream.scales[r]))
            for k in 0..<stream.sparsity {
                let a = CSRCodeStream.readIndex(stream.indexBytes, r * stream.sparsity + k, width: stream.width)
                let c = scale * Double(stream.coefficients8[r * stream.sparsity + k])
                for i in 0..<64 { fp16[i] += c * Double(HalfPrecision.float(stream.atomBits[a * 64 + i])) }
                bound += abs(c) * Double(fixed.unit) / 2
            }
            for i in 0..<64 { worst = max(worst, Float(abs(Double(got[i]) - fp16[i]) / (bound + 1e-6 * abs(fp16[i]) + 1e-30))) }
        }
        #expect(stream.rows > 0 && worst <= 1, "worst distance from the fp16 rows, in units of the bound: \(worst)")
    }
}
