import CBLAS

/// A weight matrix, `rows` x `cols` row-major: `rows` outputs, each a dot product with
/// a `cols`-long input. This is a GGUF tensor of shape `[cols, rows]`.
///
/// The matrix is held once, in the file's own format when that has a kernel (Q4_1,
/// Q8_0: 0.6-1.1 bytes per weight), else as fp32. A single token (decode) runs the
/// quantized matrix-vector kernel; a batch (prefill) dequantizes tiles of rows into a
/// small fp32 buffer feeding sgemm (`QuantizedMatrix.applyBatch`).
public struct WeightMatrix: Sendable {
    public let rows: Int
    public let cols: Int
    /// (rows, cols) row-major fp32, only for tensor types without a quantized kernel.
    let dense: [Float]?
    /// The matrix in its file's block format.
    public let quantized: QuantizedMatrix?

    /// Below this many tokens a batch runs the single-token kernel once per token: a
    /// tile's dequantization costs about as much as 3-4 quantized products.
    static let batchThreshold = 4

    public init(rows: Int, cols: Int, data: [Float]) {
        precondition(data.count == rows * cols, "weight buffer does not match its shape")
        self.rows = rows
        self.cols = cols
        dense = data
        quantized = nil
    }

    public init(quantized q: QuantizedMatrix) {
        rows = q.rows
        cols = q.cols
        dense = nil
        quantized = q
    }

    public init(gguf: GGUFFile, name: String, rows: Int, cols: Int) throws {
        let info = try gguf.requireTensor(name, shape: [cols, rows])
        if [.q4_1, .q8_0].contains(info.type) {
            self.init(quantized: try QuantizedMatrix(gguf: gguf, name: name, rows: rows, cols: cols))
        } else {
            self.init(rows: rows, cols: cols, data: try gguf.floats(name, shape: [cols, rows]))
        }
    }

    /// Bytes held.
    public var byteCount: Int { (dense?.count ?? 0) * MemoryLayout<Float>.size + (quantized?.byteCount ?? 0) }

    /// Floats of scratch a batched `apply` needs (0 for fp32 matrices).
    var tileFloats: Int { quantized.map { $0.tileRows * cols } ?? 0 }

    /// Row `r` as fp32 into `out` (cols floats): an embedding lookup.
    func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        if let quantized { return quantized.dequantize(rows: r..<r + 1, into: out) }
        dense?.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + r * cols, count: cols) }
    }

    /// y (n, rows) = x (n, cols) * W^T. `tile` (``tileFloats``) is needed for a batch of
    /// a quantized matrix; without it one is allocated.
    public func apply(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>,
                      tile: UnsafeMutablePointer<Float>? = nil) {
        if let quantized {
            if n < Self.batchThreshold {
                for i in 0..<n { quantized.apply(x + i * cols, into: y + i * rows) }
                return
            }
            let threads = ComputeThreads.count
            if let tile { return quantized.applyBatch(x, count: n, into: y, tile: tile, threads: threads) }
            let t = UnsafeMutablePointer<Float>.allocate(capacity: tileFloats)
            defer { t.deallocate() }
            return quantized.applyBatch(x, count: n, into: y, tile: t, threads: threads)
        }
        dense?.withUnsafeBufferPointer { w in
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, w.baseAddress, Int32(cols),
                            x, 1, 0, y, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rows), Int32(cols), 1,
                            x, Int32(cols), w.baseAddress, Int32(cols), 0, y, Int32(rows))
            }
        }
    }

    /// y_i (n, rows_i) = x (n, cols) * W_i^T for matrices reading the same x. One token on
    /// quantized matrices runs as one grouped product (x quantized once, one wake of the
    /// threads); anything else runs the products one by one.
    static func apply(_ ms: [WeightMatrix], _ x: UnsafePointer<Float>, count n: Int,
                      into ys: [UnsafeMutablePointer<Float>], tile: UnsafeMutablePointer<Float>? = nil) {
        let quantized = ms.compactMap(\.quantized)
        if n == 1, quantized.count == ms.count {
            return QuantizedMatrix.apply(quantized, x, into: ys, threads: ComputeThreads.count)
        }
        for (m, y) in zip(ms, ys) { m.apply(x, count: n, into: y, tile: tile) }
    }
}
