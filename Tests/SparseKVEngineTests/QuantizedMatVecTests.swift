import CBLAS
import Foundation
import Testing
@testable import SparseKVEngine

// QuantizedMatrix.apply against fp32 dequantize-then-dot (in Double), on synthetic
// matrices of the model's shapes and on the real model's tensors.

// MARK: - Helpers

extension TestRandom {
    /// Roughly Gaussian (sum of four uniforms), with a few large outliers like real
    /// hidden states have.
    mutating func activations(_ n: Int) -> [Float] {
        (0..<n).map { _ in
            let g = (0..<4).reduce(Float(0)) { s, _ in s + Float.random(in: -1...1, using: &self) }
            return Int.random(in: 0..<100, using: &self) == 0 ? g * 20 : g
        }
    }
}

/// `m` dequantized: (rows, cols).
private func dequantized(_ m: QuantizedMatrix) -> [Float] {
    var w = [Float](repeating: 0, count: m.rows * m.cols)
    m.blocks.withUnsafeBytes { src in w.withUnsafeMutableBufferPointer { Dequantize.run(m.type, from: src, into: $0) } }
    return w
}

private func apply(_ m: QuantizedMatrix, _ x: [Float]) -> [Float] {
    var y = [Float](repeating: .nan, count: m.rows)
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { m.apply(xp.baseAddress!, into: $0.baseAddress!) } }
    return y
}

/// How far `apply` is from the exact product of the dequantized weights.
private struct Deviation {
    /// rows whose error exceeded the bound (should be none)
    var violations = 0
    /// max |y - ref| / max |ref|
    var relative: Double = 0
}

/// Checks every row against an error bound: rounding x to 16 bits moves each product
/// by at most |w| * (max|x| of its block) / 65534; add fp32 accumulation slack.
private func deviation(_ m: QuantizedMatrix, _ x: [Float]) -> Deviation {
    let w = dequantized(m), y = apply(m, x)
    let blockMax = stride(from: 0, to: m.cols, by: 32).map { b in x[b..<b + 32].reduce(Float(0)) { max($0, abs($1)) } }
    var dev = Deviation(), maxErr = 0.0, maxRef = 0.0
    for r in 0..<m.rows {
        var ref = 0.0, bound = 0.0, magnitude = 0.0
        for c in 0..<m.cols {
            let wv = Double(w[r * m.cols + c])
            ref += wv * Double(x[c])
            magnitude += abs(wv * Double(x[c]))
            bound += abs(wv) * Double(blockMax[c / 32]) / 65534
        }
        let err = abs(Double(y[r]) - ref)
        if !(err <= bound + 1e-5 * magnitude + 1e-30) { dev.violations += 1 }
        maxErr = max(maxErr, err)
        maxRef = max(maxRef, abs(ref))
    }
    dev.relative = maxErr / max(maxRef, .leastNormalMagnitude)
    return dev
}

private func quantized(_ type: GGMLType, rows: Int, cols: Int, seed: UInt64) throws -> QuantizedMatrix {
    var rng = TestRandom(seed: seed)
    // Weights with a per-row offset so Q4_1's m term is exercised, not just centred data.
    let values = (0..<rows * cols).map { i in Float.random(in: -0.1...0.1, using: &rng) + Float(i / cols % 5) * 0.01 }
    let bytes = try #require(Quantize.quantize(values, to: type))
    return try bytes.withUnsafeBytes { try QuantizedMatrix(type: type, rows: rows, cols: cols, bytes: $0) }
}

// MARK: - Synthetic matrices

@Suite struct QuantizedMatVecTests {
    static let shapes: [(rows: Int, cols: Int)] = [
        (576, 576), (192, 576), (1536, 576), (576, 1536),  // the model's layer matrices
        (7, 64), (5, 96), (3, 160), (1, 32),                // odd rows; 2, 3, 5, 1 blocks (tail paths)
    ]

    @Test(arguments: [GGMLType.q4_1, .q8_0])
    func matchesDequantizedProduct(type: GGMLType) throws {
        for (i, s) in Self.shapes.enumerated() {
            let m = try quantized(type, rows: s.rows, cols: s.cols, seed: UInt64(i))
            var rng = TestRandom(seed: 100 + UInt64(i))
            let dev = deviation(m, rng.activations(s.cols))
            #expect(dev.violations == 0, "\(type) \(s.rows)x\(s.cols)")
            #expect(dev.relative < 1e-3, "\(type) \(s.rows)x\(s.cols): \(dev.relative)")
        }
    }

    /// The tied LM head's shape, large enough to run on several threads.
    @Test func embeddingShapedQ8_0() throws {
        let m = try quantized(.q8_0, rows: 49152, cols: 576, seed: 7)
        var rng = TestRandom(seed: 8)
        let dev = deviation(m, rng.activations(576))
        #expect(dev.violations == 0)
        #expect(dev.relative < 1e-4)
    }

    /// Random bytes with hand-set scales, covering fp16 subnormal, negative and zero d
    /// and m that `Quantize` would not produce.
    @Test(arguments: [GGMLType.q4_1, .q8_0])
    func handMadeBlocks(type: GGMLType) throws {
        var rng = TestRandom(seed: 42)
        let rows = 9, cols = 32 * 7
        var bytes = (0..<rows * cols / 32 * type.blockBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let halves: [UInt16] = [0x0001, 0x03FF, 0x8200, 0x0000, 0x8000, 0x2E66, 0xAE66, 0x3C00, 0x1400, 0x5640]
        for b in 0..<rows * cols / 32 {
            let o = b * type.blockBytes
            for f in 0..<(type == .q4_1 ? 2 : 1) {
                let h = halves[Int.random(in: 0..<halves.count, using: &rng)]
                bytes[o + 2 * f] = UInt8(h & 0xFF)
                bytes[o + 2 * f + 1] = UInt8(h >> 8)
            }
        }
        let m = try bytes.withUnsafeBytes { try QuantizedMatrix(type: type, rows: rows, cols: cols, bytes: $0) }
        let dev = deviation(m, rng.activations(cols))
        #expect(dev.violations == 0)
        #expect(dev.relative < 1e-4)
    }

    /// Splitting rows across threads must not change any row's arithmetic.
    @Test func threadsGiveIdenticalRows() throws {
        let m = try quantized(.q4_1, rows: 1537, cols: 576, seed: 11)
        var rng = TestRandom(seed: 12)
        let x = rng.activations(576)
        let runs = [1, 2, 3].map { threads in
            var y = [Float](repeating: .nan, count: m.rows)
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { m.apply(xp.baseAddress!, into: $0.baseAddress!, threads: threads) }
            }
            return y.map(\.bitPattern)
        }
        #expect(runs[0] == runs[1] && runs[0] == runs[2])
        #expect(!runs[0].contains(Float.nan.bitPattern))
    }

    /// A batched product with OpenBLAS on one thread is split over the compute threads
    /// (each thread dequantizes and multiplies its own rows of every tile); each output
    /// element is still one sgemm dot product over the same tile, so the split changes no
    /// bit of the result. 4,000 rows make three tiles.
    @Test func batchSplitOverThreadsEqualsOneProduct() throws {
        let m = try quantized(.q4_1, rows: 4000, cols: 576, seed: 31)
        var rng = TestRandom(seed: 32)
        let n = 37, x = rng.activations(n * 576)
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: m.tileRows * m.cols)
        defer { tile.deallocate() }
        // The whole tiles, as OpenBLAS computes them on any thread count.
        var whole = [Float](repeating: .nan, count: n * m.rows)
        x.withUnsafeBufferPointer { xp in
            whole.withUnsafeMutableBufferPointer { m.applyBatch(xp.baseAddress!, count: n, into: $0.baseAddress!, tile: tile, threads: 1) }
        }
        #expect(!whole.contains { $0.isNaN })
        for threads in [2, 3] {
            var y = [Float](repeating: .nan, count: n * m.rows)
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    var r0 = 0
                    while r0 < m.rows {
                        let r1 = min(m.rows, r0 + m.tileRows)
                        m.applyTileSplit(xp.baseAddress!, count: n, rows: r0..<r1, into: yp.baseAddress!, tile: tile, threads: threads)
                        r0 = r1
                    }
                }
            }
            #expect(y.map(\.bitPattern) == whole.map(\.bitPattern), "threads \(threads)")
        }
    }

    /// A grouped product (q, k and v sharing one quantized input, rows split over threads
    /// across matrix boundaries) gives each matrix exactly its own product.
    @Test func groupedProductsEqualSingleOnes() throws {
        let ms = [try quantized(.q4_1, rows: 576, cols: 576, seed: 21), try quantized(.q8_0, rows: 193, cols: 576, seed: 22),
                  try quantized(.q4_1, rows: 191, cols: 576, seed: 23)]
        var rng = TestRandom(seed: 24)
        let x = rng.activations(576)
        let single = ms.map { apply($0, x).map(\.bitPattern) }
        let ys = ms.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.rows) }
        defer { ys.forEach { $0.deallocate() } }
        for threads in [1, 2, 3] {
            for (y, m) in zip(ys, ms) { y.initialize(repeating: .nan, count: m.rows) }
            x.withUnsafeBufferPointer { QuantizedMatrix.apply(ms, $0.baseAddress!, into: ys, threads: threads) }
            let got = zip(ys, ms).map { y, m in UnsafeBufferPointer(start: y, count: m.rows).map(\.bitPattern) }
            #expect(got == single, "threads \(threads)")
        }
    }

    @Test func zeroInputGivesZero() throws {
        let m = try quantized(.q4_1, rows: 4, cols: 128, seed: 3)
        #expect(apply(m, [Float](repeating: 0, count: 128)) == [0, 0, 0, 0])
    }

    @Test func rejectsBadLayouts() {
        let bytes = [UInt8](repeating: 0, count: 40)
        bytes.withUnsafeBytes { b in
            #expect(throws: QuantizedMatrix.LayoutError.unsupportedType(.q4_0)) {
                try QuantizedMatrix(type: .q4_0, rows: 1, cols: 32, bytes: b)
            }
            #expect(throws: QuantizedMatrix.LayoutError.badShape(rows: 1, cols: 48)) {
                try QuantizedMatrix(type: .q4_1, rows: 1, cols: 48, bytes: b)
            }
            #expect(throws: QuantizedMatrix.LayoutError.byteCountMismatch(type: .q8_0, rows: 1, cols: 64, expected: 68, found: 40)) {
                try QuantizedMatrix(type: .q8_0, rows: 1, cols: 64, bytes: b)
            }
            #expect((try? QuantizedMatrix(type: .q4_1, rows: 2, cols: 32, bytes: b))?.byteCount == 40)
        }
    }

    // MARK: - Real model

    /// Every matrix kind of the model (layers 0 and 29, and the tied embedding / LM head).
    static let realTensors = [
        "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "blk.29.ffn_down.weight",
        "token_embd.weight",
    ]

    @Test(.enabled(if: RealAssets.available, "needs the SmolLM2 model (scripts/setup.sh)"))
    func realModelTensors() throws {
        let g = try GGUFFile(path: RealAssets.model)
        for name in Self.realTensors {
            let m = try realMatrix(g, name)
            var rng = TestRandom(seed: 9)
            let dev = deviation(m, rng.activations(m.cols))
            print("\(name) \(m.type) \(m.rows)x\(m.cols): max |y - ref| / max |ref| = \(dev.relative)")
            #expect(dev.violations == 0, "\(name)")
            #expect(dev.relative < 1e-4, "\(name): \(dev.relative)")
        }
    }
}

private func realMatrix(_ g: GGUFFile, _ name: String) throws -> QuantizedMatrix {
    let shape = try g.requireTensor(name).shape
    try #require(shape.count == 2)
    return try QuantizedMatrix(gguf: g, name: name, rows: shape[1], cols: shape[0])
}

// MARK: - Benchmark

/// Median and fastest wall time of `body` in µs, after a warm-up. The fastest run
/// shows the kernel's own speed when other processes share the cores.
private func timing(_ calls: Int, _ body: () -> Void) -> (median: Double, min: Double) {
    for _ in 0..<10 { body() }
    var t = [Double]()
    for _ in 0..<calls {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        t.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
    }
    t.sort()
    return (t[calls / 2], t[0])
}

/// y = W x with OpenBLAS, W (rows, cols) row-major.
private func sgemv(_ w: UnsafePointer<Float>, _ rows: Int, _ cols: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, w, Int32(cols), x, 1, 0, y, 1)
}

/// Median time of `apply` vs cblas_sgemv on the dequantized matrix. Run with
/// SPARSEKV_BENCH=1 swift test -c release --filter QuantizedMatVecBench
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil && RealAssets.available))
struct QuantizedMatVecBench {
    /// Each shape alone (hot in cache), then the decode-step estimate from counts.
    @Test func perShape() throws {
        openblas_set_num_threads(2)
        let g = try GGUFFile(path: RealAssets.model)
        // tensor, uses per decode step: q and output, k and v, gate and up, down (x 30
        // layers), and the tied LM head
        let kinds: [(String, Double)] = [
            ("blk.0.attn_q.weight", 60), ("blk.0.attn_k.weight", 60), ("blk.0.ffn_gate.weight", 60),
            ("blk.0.ffn_down.weight", 30), ("token_embd.weight", 1),
        ]
        print("OpenBLAS core \(BLASRuntime.coreName); µs as median (fastest) of 200 calls")
        print("tensor                 shape           q 1 thread      q apply()       sgemv 2 threads  speed-up")
        var q1 = 0.0, q2 = 0.0, f = 0.0
        for (name, uses) in kinds {
            let m = try realMatrix(g, name)
            let w = dequantized(m)
            var rng = TestRandom(seed: 1)
            let x = rng.activations(m.cols)
            var y = [Float](repeating: 0, count: m.rows)
            func quant(_ threads: Int) -> (median: Double, min: Double) {
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        timing(200) { m.apply(xp.baseAddress!, into: yp.baseAddress!, threads: threads) }
                    }
                }
            }
            // apply() splits only matrices above the threading threshold.
            let t1 = quant(1), t2 = quant(ComputeThreads.count)
            let tf = w.withUnsafeBufferPointer { wp in
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        timing(200) { sgemv(wp.baseAddress!, m.rows, m.cols, xp.baseAddress!, yp.baseAddress!) }
                    }
                }
            }
            let best = min(t1.median, t2.median)
            q1 += t1.median * uses
            q2 += best * uses
            f += tf.median * uses
            func cell(_ t: (median: Double, min: Double)) -> String { String(format: "%7.1f (%6.1f)", t.median, t.min) }
            print(name.replacingOccurrences(of: ".weight", with: "").padding(toLength: 22, withPad: " ", startingAt: 0)
                + " \(m.type) \(m.rows)x\(m.cols)".padding(toLength: 16, withPad: " ", startingAt: 0)
                + " \(cell(t1))  \(cell(t2))  \(cell(tf))  " + String(format: "%5.2fx", tf.median / best))
        }
        print(String(format: "decode step estimate (30 layers + LM head, hot caches): quantized %.2f ms (1 thread) / %.2f ms (best), sgemv %.2f ms, %.2fx",
                     q1 / 1000, q2 / 1000, f / 1000, f / q2))
    }

    /// All 30 layers' distinct matrices and the LM head in decode order, so weights come
    /// from memory as in a real decode step, not from cache.
    @Test func fullDecodeStep() throws {
        openblas_set_num_threads(2)
        let g = try GGUFFile(path: RealAssets.model)
        let kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
        var mats = try (0..<30).flatMap { l in try kinds.map { try realMatrix(g, "blk.\(l).\($0).weight") } }
        mats.append(try realMatrix(g, "token_embd.weight"))
        let dense = mats.map { dequantized($0) }
        var rng = TestRandom(seed: 2)
        let x = rng.activations(1536)
        var y = [Float](repeating: 0, count: 49152)
        func quant(_ threads: Int) -> (median: Double, min: Double) {
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    timing(20) { for m in mats { m.apply(xp.baseAddress!, into: yp.baseAddress!, threads: threads) } }
                }
            }
        }
        let t1 = quant(1), t2 = quant(ComputeThreads.count)
        let tf = x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                timing(20) {
                    for (m, w) in zip(mats, dense) {
                        w.withUnsafeBufferPointer { sgemv($0.baseAddress!, m.rows, m.cols, xp.baseAddress!, yp.baseAddress!) }
                    }
                }
            }
        }
        let qBytes = Double(mats.reduce(0) { $0 + $1.byteCount }), fBytes = Double(dense.reduce(0) { $0 + $1.count * 4 })
        print(String(format: "full decode step, weights streamed from memory (ms, median (fastest) of 20):"))
        for (label, t, bytes) in [("quantized, 1 thread ", t1, qBytes), ("quantized, apply()  ", t2, qBytes), ("sgemv, 2 threads    ", tf, fBytes)] {
            print("  \(label) " + String(format: "%7.2f (%6.2f)  %4.0f MB  %5.1f GB/s", t.median / 1000, t.min / 1000, bytes / 1e6, bytes / t.median / 1000))
        }
        print(String(format: "  speed-up %.2fx", tf.median / min(t1.median, t2.median)))
    }
}
