import CBLAS
import Dispatch

/// Batched products (prefill, the LM head over many rows) on the quantized blocks: tiles
/// of rows are dequantized into a small fp32 buffer that feeds sgemm, so no fp32 copy of
/// the matrix is ever resident. The dequantized values are those of `Dequantize` (the
/// same formula, element for element), so the product equals the one on a full fp32 copy
/// up to sgemm's summation order.
extension QuantizedMatrix {
    /// Floats of fp32 tile one batched product uses at most: tiles of whole rows up to
    /// ``tileFloats`` (1 MiB of floats: 4 MiB), so a layer's matrices are one tile each
    /// and the 49,152-row LM head is cut into tiles.
    public static let tileFloats = 1 << 20

    /// Rows per tile for this matrix.
    var tileRows: Int { max(1, min(rows, Self.tileFloats / cols)) }

    /// y (n, rows) = x (n, cols) * W^T for a batch of n rows: dequantized tiles + sgemm.
    /// `tile` must hold tileRows * cols floats.
    func applyBatch(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>,
                    tile: UnsafeMutablePointer<Float>, threads: Int) {
        let t = tileRows
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + t)
            if threads > 1 && BLASRuntime.engineSplitsBatches {
                applyTileSplit(x, count: n, rows: r0..<r1, into: y, tile: tile, threads: threads)
            } else {
                dequantize(rows: r0..<r1, into: tile, threads: threads)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(r1 - r0), Int32(cols), 1,
                            x, Int32(cols), tile, Int32(cols), 0, y + r0, Int32(rows))
            }
            r0 = r1
        }
    }

    /// One tile's product with OpenBLAS single-threaded: each of `threads` threads
    /// dequantizes its own slice of the tile's rows and runs the sgemm of those output
    /// columns, so no thread waits on another and OpenBLAS's own pool never spins.
    /// Internal for the test that holds it to the whole-tile product.
    func applyTileSplit(_ x: UnsafePointer<Float>, count n: Int, rows range: Range<Int>,
                        into y: UnsafeMutablePointer<Float>, tile: UnsafeMutablePointer<Float>, threads: Int) {
        let nb = cols / 32, rowBytes = nb * type.blockBytes, count = range.count, cols = cols, rows = rows
        let parts = min(threads, max(1, count / 16))
        blocks.withUnsafeBytes { w in
            guard let base = w.baseAddress else { return }
            let job = TileJob(dequant: DequantJob(base: base + range.lowerBound * rowBytes, out: tile, type: type, blocks: nb),
                              x: x, y: y + range.lowerBound, tile: tile)
            ComputePool.shared.perform(iterations: parts, threads: parts) { p in
                let a = count * p / parts, b = count * (p + 1) / parts
                job.dequant.run(rows: a..<b)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(b - a), Int32(cols), 1,
                            job.x, Int32(cols), job.tile + a * cols, Int32(cols), 0, job.y + a, Int32(rows))
            }
        }
    }

    /// What the threads of one split tile share; each writes its own rows of the tile and
    /// its own columns of y.
    private struct TileJob: @unchecked Sendable {
        let dequant: DequantJob
        let x: UnsafePointer<Float>
        let y: UnsafeMutablePointer<Float>
        let tile: UnsafeMutablePointer<Float>
    }

    /// Rows `range` as fp32, (range.count, cols) row-major, on up to `threads` threads.
    public func dequantize(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>, threads: Int = 1) {
        let nb = cols / 32, rowBytes = nb * type.blockBytes
        let parts = min(max(1, threads), max(1, range.count * cols / Self.weightsPerThread))
        blocks.withUnsafeBytes { w in
            guard let base = w.baseAddress else { return }
            let job = DequantJob(base: base + range.lowerBound * rowBytes, out: out, type: type, blocks: nb)
            if parts == 1 {
                job.run(rows: 0..<range.count)
                return
            }
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                job.run(rows: range.count * p / parts..<range.count * (p + 1) / parts)
            }
        }
    }

    /// One dequantization shared by threads, each writing disjoint rows of `out`.
    private struct DequantJob: @unchecked Sendable {
        let base: UnsafeRawPointer
        let out: UnsafeMutablePointer<Float>
        let type: GGMLType
        let blocks: Int

        func run(rows: Range<Int>) {
            let rowBytes = blocks * type.blockBytes
            for r in rows {
                let src = base + r * rowBytes, dst = out + r * blocks * 32
                if type == .q4_1 {
                    for b in 0..<blocks { QuantizedMatrix.dequantQ4_1(src + b * 20, dst + b * 32) }
                } else {
                    for b in 0..<blocks { QuantizedMatrix.dequantQ8_0(src + b * 34, dst + b * 32) }
                }
            }
        }
    }

    /// One Q4_1 block: x = q * d + m (low nibbles are elements 0-15, high 16-31), with the
    /// multiply and add rounded separately exactly as `Dequantize` does.
    @inline(__always)
    static func dequantQ4_1(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = SIMD16<Float>(repeating: half(p)), m = SIMD16<Float>(repeating: half(p + 2))
        let q = p.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
        let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0F))
        let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4))
        let raw = UnsafeMutableRawPointer(y)
        raw.storeBytes(of: lo * d + m, as: SIMD16<Float>.self)
        raw.storeBytes(of: hi * d + m, toByteOffset: 64, as: SIMD16<Float>.self)
    }

    /// One Q8_0 block: x = q * d.
    @inline(__always)
    static func dequantQ8_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = SIMD16<Float>(repeating: half(p))
        let q0 = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
        let q1 = p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
        let raw = UnsafeMutableRawPointer(y)
        raw.storeBytes(of: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q0)) * d, as: SIMD16<Float>.self)
        raw.storeBytes(of: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q1)) * d, toByteOffset: 64, as: SIMD16<Float>.self)
    }
}
