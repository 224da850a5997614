/// How ``PackedCodes`` stores coefficients. The raw value is the code written in the
/// serialized header.
public enum CoefficientFormat: UInt8, Sendable, CaseIterable {
    /// IEEE binary16 per coefficient, little-endian: 2 bytes per pair. Relative error
    /// at most 2^-11 for |c| in [6.1e-5, 65504]; larger magnitudes cannot be packed.
    case float16 = 1
    /// Per vector one binary16 scale = max_k |c_k| / 127 (2 bytes), then one int8 q_k per
    /// pair with c_k ~ q_k * scale: 1 byte per pair + 2 per vector. The error of every
    /// coefficient is at most ``int8ErrorBound(maxMagnitude:)`` (about max |c| / 254).
    /// A vector whose max |c| is below 127 * 2^-25 (3.8e-6) stores all zeros, because its
    /// scale underflows binary16. With s = 1 it is larger than `float16`, and only pays
    /// from s = 3.
    case int8 = 2

    /// Coefficient bytes for `count` vectors of `sparsity` pairs.
    public func byteCount(count: Int, sparsity: Int) -> Int {
        switch self {
        case .float16: return count * sparsity * 2
        case .int8: return count * 2 + count * sparsity
        }
    }

    /// Largest |c - unpacked c| of an int8 coefficient in a vector whose largest
    /// |coefficient| is `maxMagnitude`: half a quantization step, or, for the largest
    /// coefficient when the scale rounded down, 127 times the scale's binary16 rounding
    /// (relative 2^-11, or absolute 2^-25 for subnormal scales below 6.1e-5).
    public static func int8ErrorBound(maxMagnitude: Float) -> Float {
        let scale = maxMagnitude / 127
        return scale * (0.5 + 127 * 0x1p-11) + 127 * 0x1p-25
    }

    var name: String {
        switch self {
        case .float16: return "fp16"
        case .int8: return "int8"
        }
    }
}
