import CBLAS

/// A dense fp32 weight matrix, `rows` x `cols` row-major: `rows` outputs, each a dot
/// product with a `cols`-long input. This is a GGUF tensor of shape `[cols, rows]`.
public struct WeightMatrix: Sendable {
    public let rows: Int
    public let cols: Int
    /// (rows, cols) row-major
    public let data: [Float]

    public init(rows: Int, cols: Int, data: [Float]) {
        precondition(data.count == rows * cols, "weight buffer does not match its shape")
        self.rows = rows
        self.cols = cols
        self.data = data
    }

    public init(gguf: GGUFFile, name: String, rows: Int, cols: Int) throws {
        self.init(rows: rows, cols: cols, data: try gguf.floats(name, shape: [cols, rows]))
    }

    public var byteCount: Int { data.count * MemoryLayout<Float>.size }

    /// y (n, rows) = x (n, cols) * W^T. One sgemv for a single token, one sgemm for a batch.
    public func apply(_ x: UnsafePointer<Float>, count n: Int, into y: UnsafeMutablePointer<Float>) {
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
