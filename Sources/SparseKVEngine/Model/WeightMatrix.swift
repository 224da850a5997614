import CBLAS

/// A weight matrix, `rows` x `cols` row-major: `rows` outputs, each a dot product with
/// a `cols`-long input. This is a GGUF tensor of shape `[cols, rows]`.
///
/// Batches (prefill) run as one sgemm on an fp32 copy. A single token (decode) is
/// memory-bound, so when the file stores the matrix as Q4_1 or Q8_0 the blocks are kept
/// too and one token's product reads them instead: 0.6-1.1 bytes per weight, not 4.
public struct WeightMatrix: Sendable {
    public let rows: Int
    public let cols: Int
    /// (rows, cols) row-major
    public let data: [Float]
    /// The same matrix in its file's block format, for single-token products.
    public let quantized: QuantizedMatrix?

    public init(rows: Int, cols: Int, data: [Float], quantized: QuantizedMatrix? = nil) {
        precondition(data.count == rows * cols, "weight buffer does not match its shape")
        precondition(quantized.map { $0.rows == rows && $0.cols == cols } ?? true, "quantized copy does not match")
        self.rows = rows
        self.cols = cols
        self.data = data
        self.quantized = quantized
    }

    public init(gguf: GGUFFile, name: String, rows: Int, cols: Int) throws {
        let info = try gguf.requireTensor(name, shape: [cols, rows])
        let q = [.q4_1, .q8_0].contains(info.type)
            ? try QuantizedMatrix(type: info.type, rows: rows, cols: cols, bytes: gguf.rawData(info))
            : nil
        self.init(rows: rows, cols: cols, data: try gguf.floats(name, shape: [cols, rows]), quantized: q)
    }

    /// Bytes held: the fp32 copy plus the quantized blocks, if kept.
    public var byteCount: Int { data.count * MemoryLayout<Float>.size + (quantized?.byteCount ?? 0) }

    /// y (n, rows) = x (n, cols) * W^T. Quantized blocks for one token when present,
    /// else sgemv; one sgemm for a batch.
    public func apply(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>) {
        if n == 1, let quantized { return quantized.apply(x, into: y) }
        data.withUnsafeBufferPointer { w in
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, w.baseAddress, Int32(cols),
                            x, 1, 0, y, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rows), Int32(cols), 1,
                            x, Int32(cols), w.baseAddress, Int32(cols), 0, y, Int32(rows))
            }
        }
    }
}
