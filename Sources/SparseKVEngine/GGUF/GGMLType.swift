/// Tensor element types of the GGUF format (ggml's `enum ggml_type`), limited to the
/// ones SparseKV reads. Raw values are the on-disk type ids.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q4_K = 12
    case q6_K = 14
    case bf16 = 30

    /// Elements per quantization block (1 for plain float types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
        case .q4_K, .q6_K: return 256
        }
    }

    /// Bytes per block, as laid out by ggml (see ggml-common.h).
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 2 + 16            // d (f16), 32 x 4-bit
        case .q4_1: return 2 + 2 + 16        // d, m (f16), 32 x 4-bit
        case .q5_0: return 2 + 4 + 16        // d, qh (32 high bits), 32 x low 4-bit
        case .q5_1: return 2 + 2 + 4 + 16    // d, m, qh, qs
        case .q8_0: return 2 + 32            // d, 32 x int8
        case .q4_K: return 2 + 2 + 12 + 128  // d, dmin, 12 bytes of 6-bit scales/mins, 256 x 4-bit
        case .q6_K: return 128 + 64 + 16 + 2 // ql, qh, int8 scales, d
        }
    }

    /// Bytes needed for `count` elements; nil when `count` is not a whole number of blocks.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q4_K: return "Q4_K"
        case .q6_K: return "Q6_K"
        }
    }
}
