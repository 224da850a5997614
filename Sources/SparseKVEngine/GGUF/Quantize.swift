/// Conversion of fp32 values to GGUF tensor bytes, for writing small models and
/// dictionary files.
///
/// The block quantizers are round-to-nearest, the same as ggml's reference
/// `quantize_row_*_ref` functions, so their output matches what `llama-quantize` would
/// write without an importance matrix. The K-quant types are only read by SparseKV and
/// have no quantizer here.
public enum Quantize {
    // MARK: - Dispatch

    /// The bytes of `values` stored as `type`, or nil when `type` has no quantizer here
    /// (Q4_K, Q6_K). `values.count` must be a whole number of blocks.
    public static func quantize(_ values: [Float], to type: GGMLType) -> [UInt8]? {
        switch type {
        case .f32: return quantizeF32(values)
        case .f16: return quantizeF16(values)
        case .bf16: return quantizeBF16(values)
        case .q8_0: return quantizeQ8_0(values)
        case .q4_0: return quantizeQ4_0(values)
        case .q4_1: return quantizeQ4_1(values)
        case .q5_0: return quantizeQ5_0(values)
        case .q5_1: return quantizeQ5_1(values)
        case .q4_K, .q6_K: return nil
        }
    }

    // MARK: - Plain floats

    /// Little-endian fp32 bytes.
    public static func quantizeF32(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 4)
        for v in values { appendLE(&out, v.bitPattern) }
        return out
    }

    /// Little-endian fp16 bytes, rounded to nearest even.
    public static func quantizeF16(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 2)
        for v in values { appendLE(&out, floatToHalf(v)) }
        return out
    }

    /// Little-endian bfloat16 bytes, rounded to nearest even.
    public static func quantizeBF16(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 2)
        for v in values { appendLE(&out, floatToBF16(v)) }
        return out
    }

    // MARK: - 32-element blocks

    /// Q8_0 blocks: d = max|x| / 127, q = round(x / d).
    public static func quantizeQ8_0(_ values: [Float]) -> [UInt8] {
        blocks(values, blockBytes: GGMLType.q8_0.blockBytes) { x, out in
            var amax: Float = 0
            for v in x { amax = max(amax, abs(v)) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            appendLE(&out, floatToHalf(d))
            for v in x {
                // Ties away from zero, like C's roundf.
                out.append(UInt8(bitPattern: Int8(clamping: clampToInt(v * id, -128, 127))))
            }
        }
    }

    /// Q4_0 blocks: the value of largest magnitude maps to -8, so d = that value / -8
    /// and q = x / d + 8 (0...15), element j in the low nibble of byte j and element
    /// j + 16 in the high nibble.
    public static func quantizeQ4_0(_ values: [Float]) -> [UInt8] {
        blocks(values, blockBytes: GGMLType.q4_0.blockBytes) { x, out in
            let d = signedMax(x) / -8
            let id: Float = d != 0 ? 1 / d : 0
            appendLE(&out, floatToHalf(d))
            for j in 0..<16 {
                // C truncates (x + 8.5) toward zero; the sum is >= 0, so that is floor.
                let lo = clampToInt((x[j] * id + 8.5).rounded(.down), 0, 15)
                let hi = clampToInt((x[j + 16] * id + 8.5).rounded(.down), 0, 15)
                out.append(UInt8(lo) | UInt8(hi) << 4)
            }
        }
    }

    /// Q4_1 blocks: m = min, d = (max - min) / 15, q = round((x - m) / d) in 0...15,
    /// nibbles as in Q4_0.
    public static func quantizeQ4_1(_ values: [Float]) -> [UInt8] {
        blocks(values, blockBytes: GGMLType.q4_1.blockBytes) { x, out in
            let (lo, hi) = range(x)
            let d = (hi - lo) / 15
            let id: Float = d != 0 ? 1 / d : 0
            appendLE(&out, floatToHalf(d))
            appendLE(&out, floatToHalf(lo))
            for j in 0..<16 {
                let a = clampToInt(((x[j] - lo) * id + 0.5).rounded(.down), 0, 15)
                let b = clampToInt(((x[j + 16] - lo) * id + 0.5).rounded(.down), 0, 15)
                out.append(UInt8(a) | UInt8(b) << 4)
            }
        }
    }

    /// Q5_0 blocks: like Q4_0 with 5-bit q (d = largest-magnitude value / -16); the
    /// fifth bit of element j goes to bit j of the 32-bit qh field.
    public static func quantizeQ5_0(_ values: [Float]) -> [UInt8] {
        blocks(values, blockBytes: GGMLType.q5_0.blockBytes) { x, out in
            let d = signedMax(x) / -16
            let id: Float = d != 0 ? 1 / d : 0
            let q = x.map { clampToInt(($0 * id + 16.5).rounded(.down), 0, 31) }
            appendLE(&out, floatToHalf(d))
            appendFiveBit(&out, q)
        }
    }

    /// Q5_1 blocks: like Q4_1 with 5-bit q (d = (max - min) / 31), high bits as in Q5_0.
    public static func quantizeQ5_1(_ values: [Float]) -> [UInt8] {
        blocks(values, blockBytes: GGMLType.q5_1.blockBytes) { x, out in
            let (lo, hi) = range(x)
            let d = (hi - lo) / 31
            let id: Float = d != 0 ? 1 / d : 0
            let q = x.map { clampToInt((($0 - lo) * id + 0.5).rounded(.down), 0, 31) }
            appendLE(&out, floatToHalf(d))
            appendLE(&out, floatToHalf(lo))
            appendFiveBit(&out, q)
        }
    }

    // MARK: - Helpers

    /// Runs `body` on each 32-value block, appending its bytes to one output array.
    private static func blocks(_ values: [Float], blockBytes: Int,
                               _ body: (UnsafeBufferPointer<Float>, inout [UInt8]) -> Void) -> [UInt8] {
        precondition(values.count % 32 == 0, "\(values.count) values are not a whole number of 32-value blocks")
        var out = [UInt8]()
        out.reserveCapacity(values.count / 32 * blockBytes)
        values.withUnsafeBufferPointer { all in
            for start in stride(from: 0, to: all.count, by: 32) {
                body(UnsafeBufferPointer(rebasing: all[start..<start + 32]), &out)
            }
        }
        return out
    }

    /// The value of largest magnitude, keeping its sign (the first one on ties).
    private static func signedMax(_ x: UnsafeBufferPointer<Float>) -> Float {
        var amax: Float = 0, m: Float = 0
        for v in x where abs(v) > amax {
            amax = abs(v)
            m = v
        }
        return m
    }

    private static func range(_ x: UnsafeBufferPointer<Float>) -> (Float, Float) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for v in x {
            lo = min(lo, v)
            hi = max(hi, v)
        }
        return (lo, hi)
    }

    /// Rounds half away from zero and clamps, without trapping on NaN or overflow.
    private static func clampToInt(_ v: Float, _ lo: Int, _ hi: Int) -> Int {
        let r = v.rounded(.toNearestOrAwayFromZero)
        guard r == r else { return lo }
        if r <= Float(lo) { return lo }
        if r >= Float(hi) { return hi }
        return Int(r)
    }

    /// qh (u32, bit j = fifth bit of element j) then the 16 nibble bytes.
    private static func appendFiveBit(_ out: inout [UInt8], _ q: [Int]) {
        var qh: UInt32 = 0
        for j in 0..<32 where q[j] & 0x10 != 0 { qh |= 1 << UInt32(j) }
        appendLE(&out, qh)
        for j in 0..<16 {
            out.append(UInt8(q[j] & 0x0F) | UInt8(q[j + 16] & 0x0F) << 4)
        }
    }

    static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
}
