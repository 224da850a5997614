import CShims
import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// The C loops over runs of coded positions (`csr_keys.h` `sparsekv_key_scores`,
/// `csr_values.h` `sparsekv_value_accumulate`): packed indices read back, every level
/// giving the same bits as the block kernel and the Swift finish, and the atom-space
/// accumulation equal to the plain loop it replaced.
@Suite struct CSRRunKernelTests {
    /// `values` packed `width` bits each from bit 0 upwards, as a stream packs its indices.
    static func pack(_ values: [Int], width: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (values.count * width + 7) / 8)
        for (k, v) in values.enumerated() {
            for b in 0..<width where v >> b & 1 == 1 {
                let bit = k * width + b
                bytes[bit / 8] |= 1 << (bit % 8)
            }
        }
        return bytes
    }

    @Test func unpackedIndicesAreThePackedOnes() {
        var g = SeededGenerator(seed: 3)
        for width in [1, 7, 10, 13, 14, 15, 16, 20] {
            let values = (0..<203).map { _ in Int.random(in: 0..<(1 << width), using: &g) }
            let bytes = Self.pack(values, width: width)
            for (first, n) in [(0, 203), (1, 16), (190, 13), (57, 1)] {
                var out = [Int32](repeating: -1, count: n)
                sparsekv_unpack_indices(bytes, bytes.count, width, first, n, &out)
                #expect(out.map(Int.init) == Array(values[first..<first + n]), "width \(width) first \(first)")
                for k in [first, first + n - 1] {
                    #expect(sparsekv_read_index(bytes, bytes.count, width, k) == values[k])
                }
            }
        }
    }

    /// Scores of a run at every level, with either index unpacking, equal the block kernel's partials finished by
    /// `transposedSums` and scaled, bit for bit, for runs that start and end off the
    /// blocks of eight.
    @Test func keyRunScoresAreTheBlockKernelsFinished() throws {
        let rope = RoPE(headDim: 64, ropeDimension: 64, base: 10000)
        let table = try FusedAttentionTests.csrCodec(kvHeads: 1, int8: true).splitRopeTable(rope, capacity: 64)
        var g = SeededGenerator(seed: 11)
        let kvHeads = 3, head = 2, positions = 40, atomCount = 50, width = 6, scale: Float = 0.125
        for m in [32, 64] {
            let chunks = 64 / m
            for s in [3, 8, 16] {
                let bits = CSRFixedPointKeyTests.atomBits(count: atomCount, m: m, limit: 0.9, seed: UInt64(m + s))
                let fixed = try #require(FixedPointAtoms(bits: bits, m: m))
                let rowCount = positions * kvHeads * chunks
                let idx = (0..<rowCount * s).map { _ in Int.random(in: 0..<atomCount, using: &g) }
                let bytes = Self.pack(idx, width: width)
                let coef = (0..<rowCount * s).map { _ in Int8.random(in: -127...127, using: &g) }
                let scales = (0..<rowCount).map { _ in HalfPrecision.bits(Float.random(in: 0.01...0.1, using: &g)) }
                let rows = 3
                let queries = (0..<rows).map { _ in
                    CSRFixedPointKeyTests.split((0..<64).map { _ in Float.random(in: -2...2, using: &g) })
                }
                let qp = queries.map { storageBase($0) }
                let (t0, t1) = (3, 37)
                // The reference: block kernel at the portable level, finished in Swift.
                var expected = [Float](repeating: 0, count: rows * positions)
                var b0 = t0
                while b0 < t1 {
                    let n = min(8, t1 - b0), row0 = (b0 * kvHeads + head) * chunks
                    var blockIdx = [Int32]()
                    for j in 0..<n {
                        let first = ((b0 + j) * kvHeads + head) * chunks * s
                        blockIdx += idx[first..<first + chunks * s].map { Int32($0) }
                    }
                    var partial = [SIMD8<Float>](repeating: SIMD8(), count: rows * 16)
                    qp.withUnsafeBufferPointer { q in
                        partial.withUnsafeMutableBytes { pb in
                            var b = sparsekv_key_block(
                                atoms: fixed.atoms.baseAddress, m: m, s: s, idx: storageBase(blockIdx),
                                coef: storageBase(coef) + row0 * s, coefStride: kvHeads * chunks * s,
                                scales: storageBase(scales) + row0, scaleStride: kvHeads * chunks, unit: fixed.unit,
                                rope: table.baseAddress + b0 * 64,
                                queries: UnsafeRawPointer(q.baseAddress!).assumingMemoryBound(to: UnsafePointer<Float>?.self),
                                rows: rows, n: n, skip: 0, partial: pb.baseAddress!.assumingMemoryBound(to: Float.self))
                            withUnsafePointer(to: &b) { CSRKeyKernels.partials($0, level: .portable) }
                        }
                    }
                    for r in 0..<rows {
                        // Position j's 16 product lanes are two SIMD8s; their sum is its partial sums.
                        let p = (0..<8).map { j in partial[(r * 8 + j) * 2] + partial[(r * 8 + j) * 2 + 1] }
                        let dots = transposedSums(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]) * scale
                        for j in 0..<n { expected[r * positions + b0 + j] = dots[j] }
                    }
                    b0 += n
                }
                let unpackings = sparsekv_cpu_has_avx512vbmi() != 0 ? [Int32(0), 1] : [0]
                for level in CSRFixedPointKeyTests.levels {
                    for vbmi in unpackings {
                        var scores = [Float](repeating: 0, count: rows * positions)
                        var idxRoom = [Int32](repeating: 0, count: 8 * chunks * s)
                        var partial = [Float](repeating: 0, count: rows * 128)
                        qp.withUnsafeBufferPointer { q in
                            idxRoom.withUnsafeMutableBufferPointer { ib in
                                partial.withUnsafeMutableBufferPointer { pb in
                                    scores.withUnsafeMutableBufferPointer { sb in
                                        var run = sparsekv_key_run(
                                            block: sparsekv_key_block(
                                                atoms: fixed.atoms.baseAddress, m: m, s: s, idx: ib.baseAddress!,
                                                coef: storageBase(coef), coefStride: kvHeads * chunks * s,
                                                scales: storageBase(scales), scaleStride: kvHeads * chunks, unit: fixed.unit,
                                                rope: table.baseAddress,
                                                queries: UnsafeRawPointer(q.baseAddress!)
                                                    .assumingMemoryBound(to: UnsafePointer<Float>?.self),
                                                rows: rows, n: 0, skip: 0, partial: pb.baseAddress!),
                                            indexBytes: storageBase(bytes), indexByteCount: bytes.count, width: width,
                                            kvHeads: kvHeads, head: head, scale: scale, scores: sb.baseAddress!, stride: positions,
                                            level: Int32(level.rawValue), vbmi: vbmi)
                                        sparsekv_key_scores(&run, t0, t1)
                                    }
                                }
                            }
                        }
                        #expect(scores.map(\.bitPattern) == expected.map(\.bitPattern), "m \(m) s \(s) level \(level) vbmi \(vbmi)")
                        withExtendedLifetime(queries) {}  // qp points into them
                    }
                }
            }
        }
    }

    /// The atom-space accumulation of a run, portable and AVX-512, against the plain loop:
    /// acc4[c][atom] += weights * (coefficient * scale), pair by pair in order.
    @Test func valueRunAccumulatesEveryPairInOrder() {
        var g = SeededGenerator(seed: 12)
        let kvHeads = 3, head = 1, positions = 30, atoms = 40, width = 6
        for chunks in [1, 2, 4] {
            for s in [3, 4, 8, 16] {
                for rows in 1...4 {
                    for (t0, t1) in [(5, 27), (4, 27)] {
                        let rowCount = positions * kvHeads * chunks
                        // Repeated atoms within a row and across rows: the adds must stay in order.
                        let idx = (0..<rowCount * s).map { _ in Int.random(in: 0..<atoms, using: &g) }
                        let bytes = Self.pack(idx, width: width)
                        let coef = (0..<rowCount * s).map { _ in Int8.random(in: -127...127, using: &g) }
                        let scales = (0..<rowCount).map { _ in HalfPrecision.bits(Float.random(in: 0.01...0.1, using: &g)) }
                        let lo = 2, stride = positions
                        let weights = (0..<rows * stride).map { _ in Float.random(in: 0...1, using: &g) }
                        var expected = [SIMD4<Float>](repeating: SIMD4(), count: chunks * atoms)
                        for t in t0..<t1 {
                            var w = SIMD4<Float>()
                            for r in 0..<rows { w[r] = weights[r * stride + t - lo] }
                            for c in 0..<chunks {
                                let row = (t * kvHeads + head) * chunks + c
                                let sc = HalfPrecision.float(scales[row])
                                for k in 0..<s {
                                    expected[c * atoms + idx[row * s + k]] += w * (Float(coef[row * s + k]) * sc)
                                }
                            }
                        }
                        var kernels: [(String, (UnsafePointer<sparsekv_value_run>, Int, Int) -> Void)] = [
                            ("portable", { sparsekv_value_accumulate($0, $1, $2) })
                        ]
                        #if arch(x86_64)
                        if sparsekv_cpu_has_avx512vbmi() != 0 {
                            kernels.append(("avx512", { sparsekv_value_accumulate_avx512($0, $1, $2) }))
                            if chunks * s <= 16 {
                                kernels.append(("avx512 positions", { sparsekv_value_accumulate_positions_avx512($0, $1, $2) }))
                            }
                        }
                        #endif
                        for (name, kernel) in kernels {
                            var acc = [SIMD4<Float>](repeating: SIMD4(), count: chunks * atoms)
                            acc.withUnsafeMutableBytes { ab in
                                var run = sparsekv_value_run(
                                    indexBytes: storageBase(bytes), indexByteCount: bytes.count, width: width, s: s,
                                    chunks: chunks, kvHeads: kvHeads, head: head, atoms: atoms, coef: storageBase(coef),
                                    scales: storageBase(scales), weights: storageBase(weights), stride: stride, rows: rows, lo: lo,
                                    acc4: ab.baseAddress!.assumingMemoryBound(to: sparsekv_float4.self))
                                kernel(&run, t0, t1)
                            }
                            let same = zip(acc, expected).allSatisfy { a, e in (0..<4).allSatisfy { a[$0].bitPattern == e[$0].bitPattern } }
                            #expect(same, "\(name) chunks \(chunks) s \(s) rows \(rows) positions \(t0)..<\(t1)")
                        }
                    }
                }
            }
        }
    }

    /// The dictionary product of up to four rows in one pass (AVX-512) against
    /// `Kernels.sumOfHalfRows` row by row: the same bits.
    @Test func atomsProductOfSeveralRowsIsTheRowByRowOne() throws {
        #if arch(x86_64)
        try #require(sparsekv_cpu_has_avx512f() != 0, "needs AVX-512")
        var g = SeededGenerator(seed: 13)
        let count = 37
        for m in [32, 64] {
            let atoms = (0..<count * m).map { _ in Float16(Float.random(in: -0.5...0.5, using: &g)) }
            for rows in 1...4 {
                let wStride = count + 5, outStride = m + 3
                let w = (0..<rows * wStride).map { _ in Float.random(in: 0...1, using: &g) }
                let start = (0..<rows * outStride).map { _ in Float.random(in: -1...1, using: &g) }
                var expected = start, got = start
                for r in 0..<rows {
                    expected.withUnsafeMutableBufferPointer { o in
                        Kernels.sumOfHalfRows(count: count, dim: m, weights: storageBase(w) + r * wStride, rows: storageBase(atoms),
                                              indices: nil, into: o.baseAddress! + r * outStride, fromZero: false)
                    }
                }
                atoms.withUnsafeBytes { ab in
                    got.withUnsafeMutableBufferPointer { o in
                        sparsekv_half_atoms_product_avx512(ab.baseAddress!.assumingMemoryBound(to: UInt16.self), count, m,
                                                           storageBase(w), wStride, rows, o.baseAddress!, outStride)
                    }
                }
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "m \(m) rows \(rows)")
            }
        }
        #endif
    }
}
