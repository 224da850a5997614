import Dispatch
import Foundation

/// A weight matrix kept in its GGUF block-quantized form (Q4_1 or Q8_0), `rows` x `cols`
/// row-major like `WeightMatrix`, with a matrix-vector product that works on the blocks
/// directly instead of on a dequantized fp32 copy.
///
/// Decoding one token reads every weight once, so the fp32 path is bound by memory
/// traffic at 4 bytes per weight; here a weight costs 0.625 (Q4_1) or 1.0625 (Q8_0)
/// bytes. The input vector is quantized once per call to 16-bit integers per block of
/// 32 (scale = max|x| / 32767) so that each block's dot product is integer
/// multiply-adds (`pmaddwd`: 16-bit lane pairs multiplied and added into 32 bits)
/// followed by one float multiply. The block kernels live in QuantizedMatrix+AVX2.swift
/// (the default build) and QuantizedMatrix+Portable.swift (any other target).
///
/// Weights are widened to 16-bit lanes for `pmaddwd` anyway, so 16-bit rather than
/// llama.cpp's int8 input costs nothing and is about 250 times more accurate.
public struct QuantizedMatrix: Sendable {
    /// Why bytes could not be taken as a quantized matrix.
    public enum LayoutError: LocalizedError, Sendable, Equatable {
        case unsupportedType(GGMLType)
        case badShape(rows: Int, cols: Int)
        case byteCountMismatch(type: GGMLType, rows: Int, cols: Int, expected: Int, found: Int)

        public var errorDescription: String? {
            switch self {
            case .unsupportedType(let t):
                return "weights of type \(t) have no quantized kernel (Q4_1 and Q8_0 do); load them as fp32 instead."
            case .badShape(let r, let c):
                return "a \(r) x \(c) matrix cannot hold 32-element blocks: the column count must be a positive multiple of 32."
            case .byteCountMismatch(let t, let r, let c, let e, let f):
                return "a \(r) x \(c) \(t) matrix takes \(e) bytes but \(f) were given; the tensor data is truncated or mislabelled."
            }
        }
    }

    public let type: GGMLType
    public let rows: Int
    public let cols: Int
    /// (rows, cols / 32) blocks in ggml's layout: Q4_1 = d, m (f16), 16 nibble bytes;
    /// Q8_0 = d (f16), 32 int8. Either a copy or the tensor inside the GGUF mapping.
    let blocks: BlockStorage

    /// Where a matrix's blocks live. Read-only once made, so shared between threads.
    final class BlockStorage: @unchecked Sendable {
        let bytes: UnsafeRawBufferPointer
        /// What keeps `bytes` valid: the GGUF file (its mapping) or nothing (owned copy).
        private let owner: AnyObject?

        init(copying b: UnsafeRawBufferPointer) {
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, b.count), alignment: 64)
            if let src = b.baseAddress, b.count > 0 { p.baseAddress!.copyMemory(from: src, byteCount: b.count) }
            bytes = UnsafeRawBufferPointer(start: p.baseAddress, count: b.count)
            owner = nil
        }

        init(mapped b: UnsafeRawBufferPointer, file: GGUFFile) {
            bytes = b
            owner = file
        }

        deinit { if owner == nil { UnsafeMutableRawPointer(mutating: bytes.baseAddress)?.deallocate() } }

        var count: Int { bytes.count }

        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try body(bytes) }
    }

    /// Copies `bytes` (a whole GGUF tensor, e.g. `GGUFFile.rawData`) so the matrix
    /// outlives the file mapping. `bytes` may start at any alignment.
    public init(type: GGMLType, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws {
        try Self.check(type: type, rows: rows, cols: cols, byteCount: bytes.count)
        self.type = type
        self.rows = rows
        self.cols = cols
        blocks = BlockStorage(copying: bytes)
    }

    /// Tensor `name`, of GGUF shape [cols, rows], read in place from the file's memory
    /// mapping, which the matrix keeps alive: nothing is copied, and only the pages of the
    /// tensors a process uses (a worker's layers) become resident.
    public init(gguf: GGUFFile, name: String, rows: Int, cols: Int) throws {
        let info = try gguf.requireTensor(name, shape: [cols, rows])
        let bytes = gguf.rawData(info)
        try Self.check(type: info.type, rows: rows, cols: cols, byteCount: bytes.count)
        type = info.type
        self.rows = rows
        self.cols = cols
        blocks = BlockStorage(mapped: bytes, file: gguf)
    }

    private static func check(type: GGMLType, rows: Int, cols: Int, byteCount: Int) throws {
        guard type == .q4_1 || type == .q8_0 else { throw LayoutError.unsupportedType(type) }
        guard rows > 0, cols > 0, cols % 32 == 0 else { throw LayoutError.badShape(rows: rows, cols: cols) }
        let (blockCount, overflow1) = rows.multipliedReportingOverflow(by: cols / 32)
        let (expected, overflow2) = blockCount.multipliedReportingOverflow(by: type.blockBytes)
        guard !overflow1, !overflow2, expected == byteCount else {
            throw LayoutError.byteCountMismatch(type: type, rows: rows, cols: cols,
                                                expected: overflow1 || overflow2 ? Int.max : expected, found: byteCount)
        }
    }

    /// Bytes of weight data held (the same as in the GGUF file).
    public var byteCount: Int { blocks.count }

    // MARK: - y = W x

    /// y (rows) = W (rows, cols) x (cols), on up to `ComputeThreads.count` threads for large
    /// matrices. `x` and `y` must not overlap.
    ///
    /// The result differs from the fp32 product of the dequantized weights only by the
    /// rounding of `x` to 16 bits: each element moves by at most max|x| of its block
    /// / 65534, which left y within 7e-5 of max|y| on the SmolLM2 tensors (int8 input
    /// as in llama.cpp would give about 1e-2).
    public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        apply(x, into: y, threads: ComputeThreads.count)
    }

    /// `apply` on at most `threads` threads (benchmarks compare 1 and 2).
    func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, threads: Int) {
        Self.apply([self], x, into: [y], threads: threads)
    }

    /// y_i = W_i x for matrices of the same width reading the same x (a layer's q, k and v,
    /// or gate and up): x is quantized once, and the rows of all of them are shared out
    /// over the threads as one job, so three small products wake the threads once and
    /// together are big enough to split.
    static func apply(_ ms: [QuantizedMatrix], _ x: UnsafePointer<Float>, into ys: [UnsafeMutablePointer<Float>],
                      threads: Int) {
        guard let cols = ms.first?.cols else { return }
        precondition(ms.count == ys.count && ms.allSatisfy { $0.cols == cols }, "grouped products need one width")
        let nb = cols / 32
        // 3 multiplier vectors, then (nb, 4, 8) quantized x (see Input)
        withUnsafeTemporaryAllocation(of: SIMD8<Int16>.self, capacity: 3 + nb * 4) { xq in
            // (2, nb): per-block x scale, then per-block sum of x
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * nb) { xf in
                guard let k = xq.baseAddress, let f = xf.baseAddress else { return }
                let input = Input(multipliers: k, q: k + 3, scale: f, sum: f + nb)
                quantizeInput(x, blocks: nb, into: input)
                let total = ms.reduce(0) { $0 + $1.rows }
                let parts = min(threads, max(1, total * cols / weightsPerThread))
                let job = GroupJob(matrices: ms, x: input, ys: ys)
                if parts == 1 {
                    job.run(rows: 0..<total)
                    return
                }
                ComputePool.shared.perform(iterations: parts, threads: parts) { part in
                    job.run(rows: total * part / parts..<total * (part + 1) / parts)
                }
            }
        }
    }

    /// One grouped product shared by threads. Safe to send: the weights and the quantized
    /// input are only read while the threads run, each thread writes disjoint rows of the
    /// outputs, and `ComputePool.perform` returns only when all are done.
    private struct GroupJob: @unchecked Sendable {
        let matrices: [QuantizedMatrix]
        let x: Input
        let ys: [UnsafeMutablePointer<Float>]

        /// Rows `range` of the matrices stacked on one another.
        func run(rows range: Range<Int>) {
            var first = 0
            for (m, y) in zip(matrices, ys) {
                let lo = max(range.lowerBound, first), hi = min(range.upperBound, first + m.rows)
                if lo < hi { m.rowRange(lo - first..<hi - first, x, y) }
                first += m.rows
            }
        }
    }

    /// Weights each extra thread must get before it is worth waking. The ``ComputePool``
    /// workers stay awake between the products of a step and take a µs or so to start
    /// one, and the kernels get through 128k Q4_1 weights in about 10 µs on one core, so
    /// every product of SmolLM2's decode step splits, the 576x576 output projection
    /// included. Keeping that one on one thread (at 256k) left the second core idle for
    /// about 0.8 ms of a 10-12 ms step at 512 tokens.
    static let weightsPerThread = 128 * 1024

    /// How far ahead of the row being read ``rowRange`` asks for weights
    /// (``Prefetch``), in bytes; 0 when `SPARSEKV_PREFETCH=0` turns the hints off.
    ///
    /// A decode step streams all 96 MB of weights once. Without the hint a product ran as if
    /// its arithmetic and its memory reads took turns (the hardware prefetcher stops at each
    /// 4 KB page of the file mapping): `QuantizedMatVecBench.fullDecodeStep`, three rounds
    /// alternating, took 20.2-20.8 ms on one thread and 11.5-11.7 ms on two without it,
    /// 12.3-16.5 and 6.6-10.2 ms asking 4 KB ahead (2 and 8 KB did no better end to end).
    static let prefetchBytes = Prefetch.enabled ? 4096 : 0

    private func rowRange(_ range: Range<Int>, _ x: Input, _ y: UnsafeMutablePointer<Float>) {
        let nb = cols / 32
        let rowBytes = nb * type.blockBytes
        blocks.withUnsafeBytes { w in
            guard let base = w.baseAddress else { return }
            let ahead = Self.prefetchBytes, start = base + range.lowerBound * rowBytes
            let end = base + range.upperBound * rowBytes
            // The range's first rows, then each row's successor `ahead` bytes on.
            if ahead > 0 { Prefetch.range(start, ahead, limit: end) }
            @inline(__always) func prefetch(after row: UnsafeRawPointer) {
                if ahead > 0 { Prefetch.range(row + ahead, rowBytes, limit: end) }
            }
            if type == .q4_1 {
                for r in range {
                    let row = base + r * rowBytes
                    prefetch(after: row)
                    y[r] = Self.rowQ4_1(row, nb, x)
                }
            } else {
                for r in range {
                    let row = base + r * rowBytes
                    prefetch(after: row)
                    y[r] = Self.rowQ8_0(row, nb, x)
                }
            }
        }
    }

    // MARK: - Input quantization

    /// The input vector rounded to 16-bit integers per block of 32.
    struct Input {
        /// (3, 8) lanes of 4096, 256 and 16, which the portable kernels multiply weight lanes by
        /// to move a nibble or byte to the top. They are written here, in memory, by a
        /// function that is never inlined, so that LLVM cannot see their values: with
        /// constant masks and shifts it proves the lanes small and "narrows" the
        /// pmaddwd pattern into pack/unpack sequences three times longer.
        let multipliers: UnsafeMutablePointer<SIMD8<Int16>>
        /// (blocks, 4, 8): block b's 32 values in the order its kernels read weights:
        /// natural order for AVX2; x[0, 2, ..., 30] then x[1, 3, ..., 31] (the even and
        /// odd elements of each half) for the portable kernels.
        let q: UnsafeMutablePointer<SIMD8<Int16>>
        /// (blocks) x ≈ scale * q
        let scale: UnsafeMutablePointer<Float>
        /// (blocks) exact fp32 sum of the block's x, for Q4_1's offset term
        let sum: UnsafeMutablePointer<Float>
    }

    /// Block b of x (32 floats) rounded to 16 bits, in natural order, with its scale and
    /// exact sum written to `out`; each kernel file stores the rounded values in its own
    /// layout. Written with integer tricks and SIMD8 rather than pointwiseMax, .max(),
    /// .sum() or SIMD rounding: on SIMD32 those compile to per-lane loops and libm calls.
    @inline(__always)
    static func roundBlock(_ x: UnsafePointer<Float>, _ b: Int, into out: Input)
        -> (SIMD8<Int16>, SIMD8<Int16>, SIMD8<Int16>, SIMD8<Int16>) {
        let p = UnsafeRawPointer(x) + b * 128
        let v0 = p.loadUnaligned(as: SIMD8<Float>.self)
        let v1 = p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
        let v2 = p.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
        let v3 = p.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
        let amax = absMax(absMax(v0, v1), absMax(v2, v3)).max()
        // 32767, not 32768: keeps q symmetric and pmaddwd clear of its one overflow
        // case (-32768 * -32768 twice).
        let inv: Float = amax > 0 ? 32767 / amax : 0
        out.scale[b] = amax / 32767
        out.sum[b] = ((v0 + v1) + (v2 + v3)).sum()
        return (round16(v0, inv), round16(v1, inv), round16(v2, inv), round16(v3, inv))
    }

    /// Lane-wise max(|a|, |b|) as the bit patterns of |a| and |b|, which order like the
    /// values for non-negative floats; `a - (d & (d >> 31))` picks the larger.
    @inline(__always)
    static func absMax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        let mask = SIMD8<Int32>(repeating: 0x7FFF_FFFF)
        let x = unsafeBitCast(a, to: SIMD8<Int32>.self) & mask
        let y = unsafeBitCast(b, to: SIMD8<Int32>.self) & mask
        let d = x &- y
        return unsafeBitCast(x &- (d & (d &>> 31)), to: SIMD8<Float>.self)
    }

    /// round(v * inv) to Int16, ties to even. Adding 1.5 * 2^23 leaves the rounded
    /// integer in the low mantissa bits (SSE2 has no vector round instruction); valid
    /// for |v * inv| < 2^22, far above 32767.
    @inline(__always)
    static func round16(_ v: SIMD8<Float>, _ inv: Float) -> SIMD8<Int16> {
        let r = v * inv + SIMD8<Float>(repeating: 12_582_912)
        return SIMD8<Int16>(truncatingIfNeeded: unsafeBitCast(r, to: SIMD8<Int32>.self) &- 0x4B40_0000)
    }

    // MARK: - Scalars

    @inline(__always)
    static func load4(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
    }

    @inline(__always)
    static func half(_ p: UnsafeRawPointer) -> Float {
        halfToFloat(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
    }

    /// Four little-endian UInt32 `stride` bytes apart.
    @inline(__always)
    static func gather4(_ p: UnsafeRawPointer, stride: Int) -> SIMD4<UInt32> {
        @inline(__always) func at(_ i: Int) -> UInt32 {
            UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * stride, as: UInt32.self))
        }
        return SIMD4(at(0), at(1), at(2), at(3))
    }

    /// The fp16 values in the top 16 bits of each lane, as Float. Exponent and
    /// mantissa shifted into fp32 position read as 2^-112 times the value, so one
    /// multiply by 2^112 rebiases normals, subnormals (fp32 denormals, scaled exactly)
    /// and zero alike: 6 instructions instead of `halfToFloat`'s 13, which matters
    /// when there is no F16C. Infinities and NaNs come out as large finite numbers;
    /// quantizers never write them.
    @inline(__always)
    static func highHalfToFloat(_ w: SIMD4<UInt32>) -> SIMD4<Float> {
        let magnitude = unsafeBitCast((w & 0x7FFF_0000) &>> 3, to: SIMD4<Float>.self) * Float(bitPattern: 0x7780_0000)
        return unsafeBitCast(unsafeBitCast(magnitude, to: SIMD4<UInt32>.self) | (w & 0x8000_0000), to: SIMD4<Float>.self)
    }
}
