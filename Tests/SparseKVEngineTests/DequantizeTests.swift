import Foundation
import Testing
@testable import SparseKVEngine

// Each block below is built byte by byte and its expected values were worked out by hand
// from ggml's block layouts (ggml-common.h) and dequantize_row_* formulas (ggml-quants.c).

// MARK: - Helpers

/// Dequantizes whole blocks held in `bytes`.
private func dequantize(_ type: GGMLType, _ bytes: [UInt8]) -> [Float] {
    let n = bytes.count / type.blockBytes * type.blockSize
    var out = [Float](repeating: .nan, count: n)
    bytes.withUnsafeBytes { src in
        out.withUnsafeMutableBufferPointer { Dequantize.run(type, from: src, into: $0) }
    }
    return out
}

/// The same, from a copy of `bytes` that starts `shift` bytes into its buffer, so that
/// every multi-byte field is misaligned.
private func dequantizeShifted(_ type: GGMLType, _ bytes: [UInt8], shift: Int) -> [Float] {
    let padded = [UInt8](repeating: 0xEE, count: shift) + bytes
    let n = bytes.count / type.blockBytes * type.blockSize
    var out = [Float](repeating: .nan, count: n)
    padded.withUnsafeBytes { raw in
        let src = UnsafeRawBufferPointer(rebasing: raw[shift...])
        out.withUnsafeMutableBufferPointer { Dequantize.run(type, from: src, into: $0) }
    }
    return out
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }

/// fp16 bit patterns used below.
private enum H {
    static let one: UInt16 = 0x3C00, half: UInt16 = 0x3800, quarter: UInt16 = 0x3400
    static let two: UInt16 = 0x4000, minusOne: UInt16 = 0xBC00, minusQuarter: UInt16 = 0xB400
}

/// Deterministic bytes and floats for tests (SplitMix64).
struct TestRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &self) } }
    mutating func floats(_ n: Int, scale: Float) -> [Float] {
        (0..<n).map { _ in Float.random(in: -scale...scale, using: &self) }
    }
}

/// Bitwise equality, so NaNs from random scale fields compare equal to themselves.
private func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

@Suite("Dequantize")
struct DequantizeTests {
    // MARK: - Half precision

    @Test("halfToFloat is exact for all 65536 inputs")
    func halfToFloatExhaustive() {
        var mismatches = 0
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = halfToFloat(bits)
            if expected.isNaN ? !got.isNaN : got.bitPattern != expected.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(halfToFloat(0x3C00) == 1)
        #expect(halfToFloat(0xC000) == -2)
        #expect(halfToFloat(0x0001) == Float(bitPattern: 0x3380_0000))  // 2^-24, smallest subnormal
        #expect(halfToFloat(0x7BFF) == 65504)
        #expect(halfToFloat(0x7C00) == .infinity)
        #expect(halfToFloat(0x8000).bitPattern == (-Float(0)).bitPattern)
    }

    @Test("floatToHalf and floatToBF16 round to nearest even")
    func halfEncoders() {
        #expect(floatToHalf(1) == 0x3C00)
        #expect(floatToHalf(-2) == 0xC000)
        #expect(floatToHalf(65504) == 0x7BFF)
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa.
        #expect(floatToHalf(1 + 1.0 / 2048) == 0x3C00)
        #expect(floatToHalf(1 + 3.0 / 2048) == 0x3C02)
        #expect(floatToBF16(1) == 0x3F80)
        #expect(floatToBF16(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie, even stays
        #expect(floatToBF16(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie, odd rounds up
        #expect(bf16ToFloat(floatToBF16(.nan)).isNaN)
    }

    // MARK: - Plain float types

    @Test func f32() {
        let bytes: [UInt8] = [0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x80, 0x7F]
        let y = dequantize(.f32, bytes)
        #expect(y == [1.5, -2, .infinity])
        #expect(dequantizeShifted(.f32, bytes, shift: 3) == y)
    }

    @Test func f16() {
        let bytes: [UInt8] = le16(0x3C00) + le16(0xC000) + le16(0x3555) + le16(0x7BFF) + le16(0x0001)
        #expect(dequantize(.f16, bytes) == [1, -2, 0.333251953125, 65504, 0x1p-24])
    }

    @Test func bf16() {
        let bytes: [UInt8] = le16(0x3F80) + le16(0xC040) + le16(0x4049) + le16(0x0001)
        #expect(dequantize(.bf16, bytes) == [1, -3, 3.140625, Float(bitPattern: 0x0001_0000)])
    }

    // MARK: - 32-element blocks

    @Test("Q8_0: int8 times d, two blocks")
    func q8_0() {
        // Block 0: d = 0.5, qs[j] = j - 16 except qs[30] = 127 and qs[31] = -128.
        var b0: [UInt8] = le16(H.half) + (0..<30).map { (j: Int) -> UInt8 in UInt8(bitPattern: Int8(j - 16)) }
        b0 += [0x7F, 0x80]
        // Block 1: d = -0.25, qs[j] = j.
        let b1: [UInt8] = le16(H.minusQuarter) + (0..<32).map { (j: Int) -> UInt8 in UInt8(j) }
        let y = dequantize(.q8_0, b0 + b1)
        #expect(y.count == 64)
        #expect(y[0] == -8)
        #expect(y[5] == -5.5)
        #expect(y[16] == 0)
        #expect(y[29] == 6.5)
        #expect(y[30] == 63.5)
        #expect(y[31] == -64)
        #expect(y[33] == -0.25)
        #expect(y[63] == -7.75)
    }

    /// qs[j] = (j in the low nibble) | (15 - j in the high nibble).
    private static let rampNibbles: [UInt8] = (0..<16).map { (j: Int) -> UInt8 in UInt8(j) | UInt8(15 - j) << 4 }

    @Test("Q4_0: low nibble is element j, high nibble element j + 16")
    func q4_0() {
        let y = dequantize(.q4_0, le16(H.two) + Self.rampNibbles)
        // (q - 8) * 2 with q = j for the first half and 15 - j for the second.
        let low: [Float] = (0..<16).map { (j: Int) -> Float in Float((j - 8) * 2) }
        let high: [Float] = (0..<16).map { (j: Int) -> Float in Float((7 - j) * 2) }
        let expected = low + high
        #expect(y == expected)
        #expect(y[0] == -16)
        #expect(y[3] == -10)
        #expect(y[15] == 14)
        #expect(y[16] == 14)
        #expect(y[19] == 8)
        #expect(y[31] == -16)
    }

    @Test("Q4_1: q * d + m")
    func q4_1() {
        let y = dequantize(.q4_1, le16(H.half) + le16(H.minusOne) + Self.rampNibbles)
        #expect(y[0] == -1)
        #expect(y[3] == 0.5)
        #expect(y[15] == 6.5)
        #expect(y[16] == 6.5)  // high nibble of qs[0] = 15
        #expect(y[19] == 5)
        #expect(y[31] == -1)
    }

    /// qh = 0x00FF_AAAA: fifth bit set for odd elements 1...15 and for elements 16...23.
    /// qs[j] = j in both nibbles.
    private static let fiveBitTail: [UInt8] = le32(0x00FF_AAAA) + (0..<16).map { (j: Int) -> UInt8 in UInt8(j * 17) }

    @Test("Q5_0: fifth bit from qh, (q - 16) * d")
    func q5_0() {
        let y = dequantize(.q5_0, le16(H.half) + Self.fiveBitTail)
        #expect(y[0] == -8)     // q = 0
        #expect(y[1] == 0.5)    // q = 1 | 16
        #expect(y[2] == -7)     // q = 2
        #expect(y[15] == 7.5)   // q = 15 | 16
        #expect(y[16] == 0)     // q = 0 | 16, bit 16 of qh
        #expect(y[23] == 3.5)   // q = 7 | 16, bit 23
        #expect(y[24] == -4)    // q = 8, bit 24 clear
        #expect(y[31] == -0.5)  // q = 15
    }

    @Test("Q5_1: fifth bit from qh, q * d + m")
    func q5_1() {
        let y = dequantize(.q5_1, le16(H.quarter) + le16(H.one) + Self.fiveBitTail)
        #expect(y[0] == 1)
        #expect(y[1] == 5.25)
        #expect(y[2] == 1.5)
        #expect(y[15] == 8.75)
        #expect(y[16] == 5)
        #expect(y[24] == 3)
        #expect(y[31] == 4.75)
    }

    // MARK: - K-quants

    /// Sub-block scales 1, 2, 3, 4, 37, 50, 63, 17 and mins 5, 6, 7, 8, 33, 44, 55, 60,
    /// packed by hand: bytes 0-7 hold the low 6 bits of scales/mins 0-3 plus, in their top
    /// 2 bits, the high bits of scales/mins 4-7; bytes 8-11 hold the low nibbles of 4-7.
    private static let q4KScales: [UInt8] = [0x81, 0xC2, 0xC3, 0x44, 0x85, 0x86, 0xC7, 0xC8, 0x15, 0xC2, 0x7F, 0xC1]

    @Test("Q4_K: 6-bit scale/min packing for sub-blocks 0-3 and 4-7")
    func q4KScalePacking() {
        let expected: [(UInt8, UInt8)] = [(1, 5), (2, 6), (3, 7), (4, 8), (37, 33), (50, 44), (63, 55), (17, 60)]
        Self.q4KScales.withUnsafeBytes { raw in
            for (j, e) in expected.enumerated() {
                let got = Dequantize.q4KScaleMin(raw.baseAddress!, j)
                #expect(got.scale == e.0 && got.min == e.1, "sub-block \(j)")
            }
        }
    }

    @Test("Q4_K: d * scale * q - dmin * min per 32-element sub-block")
    func q4_K() {
        // d = 1, dmin = 0.5; qs[i] = (i % 16) | (15 - i % 16) << 4.
        let qs: [UInt8] = (0..<128).map { (i: Int) -> UInt8 in UInt8(i % 16) | UInt8(15 - i % 16) << 4 }
        let block: [UInt8] = le16(H.one) + le16(H.half) + Self.q4KScales + qs
        #expect(block.count == GGMLType.q4_K.blockBytes)
        let y = dequantize(.q4_K, block)
        #expect(y[0] == -2.5)    // sub-block 0: 1 * 0 - 0.5 * 5
        #expect(y[1] == -1.5)    // 1 * 1 - 2.5
        #expect(y[32] == 27)     // sub-block 1, high nibble of qs[0] = 15: 2 * 15 - 3
        #expect(y[70] == 14.5)   // sub-block 2, q = 6: 3 * 6 - 3.5
        #expect(y[100] == 40)    // sub-block 3, high nibble of qs[36] = 11: 4 * 11 - 4
        #expect(y[131] == 94.5)  // sub-block 4, q = 3: 37 * 3 - 16.5
        #expect(y[170] == 228)   // sub-block 5, high nibble of qs[74] = 5: 50 * 5 - 22
        #expect(y[200] == 476.5) // sub-block 6, q = 8: 63 * 8 - 27.5
        #expect(y[240] == 225)   // sub-block 7, high nibble of qs[112] = 15: 17 * 15 - 30
        #expect(y[255] == -30)   // sub-block 7, high nibble of qs[127] = 0
    }

    @Test("Q6_K: ql/qh/scales layout, d * scale * (q - 32)")
    func q6_K() {
        let ql: [UInt8] = (0..<128).map { (i: Int) -> UInt8 in UInt8(i) }
        // First half: top bits 0, 1, 2, 3 for the four 32-element runs; second half 3, 2, 1, 0.
        let qh = [UInt8](repeating: 0xE4, count: 32) + [UInt8](repeating: 0x1B, count: 32)
        let scales: [Int8] = [1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128]
        let scaleBytes: [UInt8] = scales.map { UInt8(bitPattern: $0) }
        let block: [UInt8] = ql + qh + scaleBytes + le16(H.half)
        #expect(block.count == GGMLType.q6_K.blockBytes)
        let y = dequantize(.q6_K, block)
        #expect(y[5] == -13.5)   // low nibble of ql[5] = 5, top 0: 0.5 * 1 * (5 - 32)
        #expect(y[20] == 28)     // ql[20] = 0x14 -> 4: 0.5 * -2 * -28
        #expect(y[40] == -12)    // low nibble of ql[40] = 8, top 1 -> 24: 0.5 * 3 * -8
        #expect(y[90] == -3)     // high nibble of ql[26] = 1, top 2 -> 33: 0.5 * -6 * 1
        #expect(y[127] == -76)   // high nibble of ql[63] = 3, top 3 -> 51: 0.5 * -8 * 19
        #expect(y[128] == 72)    // second half, low nibble of ql[64] = 0, top 3 -> 48: 0.5 * 9 * 16
        #expect(y[170] == 55)    // low nibble of ql[106] = 10, top 2 -> 42: 0.5 * 11 * 10
        #expect(y[200] == -78)   // high nibble of ql[72] = 4, top 1 -> 20: 0.5 * 13 * -12
        #expect(y[235] == -1651) // high nibble of ql[107] = 6, top 0: 0.5 * 127 * -26
        #expect(y[255] == 1600)  // high nibble of ql[127] = 7, top 0: 0.5 * -128 * -25
    }

    // MARK: - Every type: block stride and alignment

    @Test("Blocks are independent and unaligned sources give the same values", arguments: GGMLType.allCases)
    func strideAndAlignment(type: GGMLType) {
        var rng = TestRandom(seed: 0x5EED_0000 + UInt64(type.rawValue))
        let a = rng.bytes(type.blockBytes * 3)
        let b = rng.bytes(type.blockBytes)
        let whole = dequantize(type, a + b)
        #expect(sameBits(whole, dequantize(type, a) + dequantize(type, b)))
        for shift in 1...3 {
            #expect(sameBits(dequantizeShifted(type, a + b, shift: shift), whole), "shift \(shift)")
        }
        // `row` on the last block alone, read from inside the larger buffer.
        let n = type.blockSize
        var last = [Float](repeating: 0, count: n)
        (a + b).withUnsafeBytes { raw in
            last.withUnsafeMutableBufferPointer { out in
                Dequantize.row(type, from: raw.baseAddress! + a.count, count: n, into: out.baseAddress!)
            }
        }
        #expect(sameBits(last, Array(whole.suffix(n))))
    }

    // MARK: - Quantizers

    @Test("Q4_0 quantizer: largest magnitude maps to -8")
    func quantizeQ4_0Exact() {
        // max |x| is 8 at x = -8, so d = 1 and q = x + 8 exactly.
        let x: [Float] = (0..<32).map { (j: Int) -> Float in Float(j % 16 - 8) }
        let bytes = Quantize.quantizeQ4_0(x)
        #expect(bytes.count == 18)
        #expect(Array(bytes[0..<2]) == le16(H.one))
        let nibbles: [UInt8] = (0..<16).map { (j: Int) -> UInt8 in UInt8(j) | UInt8(j) << 4 }
        #expect(Array(bytes[2...]) == nibbles)
        #expect(dequantize(.q4_0, bytes) == x)
    }

    @Test("Q8_0 quantizer: d = max|x| / 127, round half away from zero")
    func quantizeQ8_0Exact() {
        var x = [Float](repeating: 0, count: 32)
        x[0] = 127
        x[1] = -2.5
        x[2] = 2.5
        x[3] = 0.4
        let bytes = Quantize.quantizeQ8_0(x)
        #expect(Array(bytes[0..<2]) == le16(H.one))
        #expect(Array(bytes[2..<6]).map { Int8(bitPattern: $0) } == [127, -3, 3, 0])
        #expect(Quantize.quantizeQ8_0([Float](repeating: 0, count: 32)) == [UInt8](repeating: 0, count: 34))
    }

    @Test("Quantize then dequantize stays within the step size", arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
    func roundTrip(type: GGMLType) throws {
        var rng = TestRandom(seed: 42 + UInt64(type.rawValue))
        for scale: Float in [1e-3, 0.7, 300] {
            var x = rng.floats(32 * 64, scale: scale)
            x[7] = 0  // exact zeros and a constant block must survive too
            x.replaceSubrange(32..<64, with: repeatElement(scale / 3, count: 32))
            let bytes = try #require(Quantize.quantize(x, to: type))
            #expect(bytes.count == type.byteCount(elements: x.count))
            let y = dequantize(type, bytes)
            var worst: Float = 0
            for b in 0..<(x.count / 32) {
                let blk = x[(b * 32)..<(b * 32 + 32)]
                let lo = blk.min() ?? 0, hi = blk.max() ?? 0, amax = max(abs(lo), abs(hi))
                // Half a step of rounding (a whole step where Q4_0/Q5_0 clamp the extreme of
                // the other sign), plus |q| times the fp16 rounding of d, plus that of m.
                // Tiny scales are fp16 subnormals, whose rounding error is absolute (2^-25).
                func f16Err(_ v: Float) -> Float { max(abs(v) / 2048, 0x1p-25) }
                let bound: Float
                switch type {
                case .q8_0: bound = amax / 127 / 2 + 127 * f16Err(amax / 127)
                case .q4_0: bound = amax / 8 + 8 * f16Err(amax / 8)
                case .q5_0: bound = amax / 16 + 16 * f16Err(amax / 16)
                case .q4_1: bound = (hi - lo) / 15 / 2 + 15 * f16Err((hi - lo) / 15) + f16Err(lo)
                default: bound = (hi - lo) / 31 / 2 + 31 * f16Err((hi - lo) / 31) + f16Err(lo)
                }
                for j in blk.indices {
                    let err = abs(y[j] - x[j])
                    worst = max(worst, err / max(bound, .leastNonzeroMagnitude))
                    #expect(err <= bound * 1.0001 + 1e-12, "\(type) scale \(scale) element \(j)")
                }
            }
            #expect(worst > 0.05, "bound should be tight enough to catch a wrong step size")
        }
    }

    @Test func quantizersCoverEveryWritableType() {
        // 127/512 makes every scale a power of two over 127, so each type is exact.
        let x = [Float](repeating: 127.0 / 512, count: 32)
        for type in GGMLType.allCases {
            let bytes = Quantize.quantize(x, to: type)
            switch type {
            case .q4_K, .q6_K: #expect(bytes == nil)
            default:
                #expect(bytes?.count == type.byteCount(elements: 32), "\(type)")
                #expect(bytes.map { dequantize(type, $0) } == x, "\(type)")
            }
        }
    }
}
