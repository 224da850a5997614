import SparseCoding

/// Conversion of GGUF tensor data (every `GGMLType`) to fp32.
///
/// Block layouts follow ggml's `ggml-common.h` and the value formulas its reference
/// `dequantize_row_*` functions in `ggml-quants.c`. All multi-byte fields are
/// little-endian and read with unaligned loads, because a tensor inside a memory-mapped
/// file is only as aligned as the file's `general.alignment`, and a caller may hand us
/// a row that starts anywhere.
public enum Dequantize {
    // MARK: - Entry points

    /// Converts `dst.count` elements of type `type` from `src` into `dst`.
    ///
    /// `dst.count` must be a whole number of blocks and `src` must hold exactly the bytes
    /// of those blocks. `GGUFFile` validates both against the file before calling, so a
    /// mismatch here is a programming error and traps.
    public static func run(_ type: GGMLType, from src: UnsafeRawBufferPointer, into dst: UnsafeMutableBufferPointer<Float>) {
        let n = dst.count
        precondition(n % type.blockSize == 0, "\(n) elements are not a whole number of \(type) blocks")
        precondition(type.byteCount(elements: n) == src.count,
                     "\(type): \(src.count) source bytes for \(n) elements")
        guard n > 0, let s = src.baseAddress, let d = dst.baseAddress else { return }
        row(type, from: s, count: n, into: d)
    }

    /// Converts `count` elements (a whole number of blocks) starting at `src` into `dst`.
    ///
    /// `src` may have any alignment. Use `type.byteCount(elements:)` to step from one row
    /// of a matrix to the next.
    public static func row(_ type: GGMLType, from src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(count >= 0 && count % type.blockSize == 0,
                     "\(count) elements are not a whole number of \(type) blocks")
        let blocks = count / type.blockSize
        switch type {
        case .f32:
            // GGUF is little-endian and so is every machine SparseKV targets.
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        case .f16:
            for i in 0..<count { dst[i] = halfToFloat(u16(src, 2 * i)) }
        case .bf16:
            for i in 0..<count { dst[i] = bf16ToFloat(u16(src, 2 * i)) }
        case .q8_0: q8_0(src, blocks, dst)
        case .q4_0: q4_0(src, blocks, dst)
        case .q4_1: q4_1(src, blocks, dst)
        case .q5_0: q5_0(src, blocks, dst)
        case .q5_1: q5_1(src, blocks, dst)
        case .q4_K: q4_K(src, blocks, dst)
        case .q6_K: q6_K(src, blocks, dst)
        }
    }

    // MARK: - Byte access

    @inline(__always)
    static func u8(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inline(__always)
    static func u16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func u32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always)
    static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        halfToFloat(u16(p, offset))
    }

    // MARK: - 32-element blocks

    /// Q8_0, 34 bytes: d (f16), qs[32] (int8). x = qs[j] * d.
    private static func q8_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 34
            let y = dst + b * 32
            let d = half(p, 0)
            let qs = p + 2
            for j in 0..<32 {
                y[j] = Float(Int8(bitPattern: u8(qs, j))) * d
            }
        }
    }

    /// Q4_0, 18 bytes: d (f16), qs[16]. Element j is the low nibble of qs[j], element
    /// j + 16 the high nibble; x = (q - 8) * d.
    private static func q4_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 18
            let y = dst + b * 32
            let d = half(p, 0)
            let qs = p + 2
            for j in 0..<16 {
                let q = u8(qs, j)
                y[j] = Float(Int32(q & 0x0F) - 8) * d
                y[j + 16] = Float(Int32(q >> 4) - 8) * d
            }
        }
    }

    /// Q4_1, 20 bytes: d, m (f16), qs[16] (nibbles as in Q4_0); x = q * d + m.
    private static func q4_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 20
            let y = dst + b * 32
            let d = half(p, 0)
            let m = half(p, 2)
            let qs = p + 4
            for j in 0..<16 {
                let q = u8(qs, j)
                y[j] = Float(q & 0x0F) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    }

    /// Q5_0, 22 bytes: d (f16), qh (u32), qs[16]. Bit j of qh is the fifth bit of
    /// element j (so bits 16...31 belong to the high-nibble elements); x = (q - 16) * d.
    private static func q5_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 22
            let y = dst + b * 32
            let d = half(p, 0)
            let qh = u32(p, 2)
            let qs = p + 6
            for j in 0..<16 {
                let q = UInt32(u8(qs, j))
                let lo = (q & 0x0F) | (((qh >> UInt32(j)) & 1) << 4)
                let hi = (q >> 4) | (((qh >> UInt32(j + 16)) & 1) << 4)
                y[j] = Float(Int32(lo) - 16) * d
                y[j + 16] = Float(Int32(hi) - 16) * d
            }
        }
    }

    /// Q5_1, 24 bytes: d, m (f16), qh (u32), qs[16] (bits as in Q5_0); x = q * d + m.
    private static func q5_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 24
            let y = dst + b * 32
            let d = half(p, 0)
            let m = half(p, 2)
            let qh = u32(p, 4)
            let qs = p + 8
            for j in 0..<16 {
                let q = UInt32(u8(qs, j))
                let lo = (q & 0x0F) | (((qh >> UInt32(j)) & 1) << 4)
                let hi = (q >> 4) | (((qh >> UInt32(j + 16)) & 1) << 4)
                y[j] = Float(lo) * d + m
                y[j + 16] = Float(hi) * d + m
            }
        }
    }

    // MARK: - 256-element super-blocks

    /// The 6-bit scale and min of sub-block `j` (0..<8) of a Q4_K block, packed in
    /// 12 bytes: sub-blocks 0-3 keep their low 6 bits in bytes 0-3 (scales) and 4-7
    /// (mins); sub-blocks 4-7 keep their low 4 bits in the nibbles of bytes 8-11 (scale
    /// low, min high) and their top 2 bits in the spare top bits of bytes 0-3 (scales)
    /// and 4-7 (mins). Same packing as ggml's `get_scale_min_k4`.
    @inline(__always)
    static func q4KScaleMin(_ scales: UnsafeRawPointer, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 {
            return (u8(scales, j) & 63, u8(scales, j + 4) & 63)
        }
        let packed = u8(scales, j + 4)
        return ((packed & 0x0F) | ((u8(scales, j - 4) >> 6) << 4),
                (packed >> 4) | ((u8(scales, j) >> 6) << 4))
    }

    /// Q4_K, 144 bytes: d, dmin (f16), scales[12], qs[128]. Eight sub-blocks of 32;
    /// each 32 bytes of qs hold two consecutive sub-blocks, the first in the low nibbles.
    /// x = d * scale * q - dmin * min.
    private static func q4_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 144
            let d = half(p, 0)
            let dmin = half(p, 2)
            let scales = p + 4
            for g in 0..<4 {
                let qs = p + 16 + 32 * g
                let y = dst + b * 256 + 64 * g
                let (s1, m1) = q4KScaleMin(scales, 2 * g)
                let (s2, m2) = q4KScaleMin(scales, 2 * g + 1)
                let d1 = d * Float(s1), o1 = dmin * Float(m1)
                let d2 = d * Float(s2), o2 = dmin * Float(m2)
                for l in 0..<32 {
                    let q = u8(qs, l)
                    y[l] = d1 * Float(q & 0x0F) - o1
                    y[l + 32] = d2 * Float(q >> 4) - o2
                }
            }
        }
    }

    /// Q6_K, 210 bytes: ql[128] (low 4 bits), qh[64] (top 2 bits), scales[16] (int8,
    /// one per 16 elements), d (f16) last. Each half of 128 elements uses 64 bytes of ql
    /// and 32 of qh: for l in 0..<32, ql[l] low/high nibbles are elements l and l + 64,
    /// ql[l + 32] low/high are l + 32 and l + 96, and qh[l] bits 0-1, 2-3, 4-5, 6-7 are
    /// the top bits of elements l, l + 32, l + 64, l + 96. x = d * scale * (q - 32).
    private static func q6_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let p = src + b * 210
            let d = half(p, 208)
            for h in 0..<2 {
                let ql = p + 64 * h
                let qh = p + 128 + 32 * h
                let sc = p + 192 + 8 * h
                let y = dst + b * 256 + 128 * h
                for half16 in 0..<2 {
                    // Scale of each 16-element run: element e of the block uses scale e / 16.
                    var ds = (Float(0), Float(0), Float(0), Float(0))
                    ds.0 = d * Float(Int8(bitPattern: u8(sc, half16 + 0)))
                    ds.1 = d * Float(Int8(bitPattern: u8(sc, half16 + 2)))
                    ds.2 = d * Float(Int8(bitPattern: u8(sc, half16 + 4)))
                    ds.3 = d * Float(Int8(bitPattern: u8(sc, half16 + 6)))
                    for l in (16 * half16)..<(16 * half16 + 16) {
                        let a = Int32(u8(ql, l)), c = Int32(u8(ql, l + 32)), hb = Int32(u8(qh, l))
                        y[l] = ds.0 * Float(((a & 0x0F) | ((hb & 3) << 4)) - 32)
                        y[l + 32] = ds.1 * Float(((c & 0x0F) | (((hb >> 2) & 3) << 4)) - 32)
                        y[l + 64] = ds.2 * Float(((a >> 4) | (((hb >> 4) & 3) << 4)) - 32)
                        y[l + 96] = ds.3 * Float(((c >> 4) | (((hb >> 6) & 3) << 4)) - 32)
                    }
                }
            }
        }
    }
}

// MARK: - Half-precision helpers

/// IEEE binary16 bits to Float, exact for every input (subnormals, infinities, NaN);
/// arithmetic only, so it inlines into the dequantization loops.
@inline(__always)
public func halfToFloat(_ bits: UInt16) -> Float { HalfPrecision.float(bits) }

/// Float to IEEE binary16 bits, rounding to nearest even (as ggml's `GGML_FP32_TO_FP16`).
@inline(__always)
public func floatToHalf(_ value: Float) -> UInt16 { HalfPrecision.bits(value) }

/// bfloat16 bits to Float (the top half of the fp32 bit pattern).
@inline(__always)
public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Float to bfloat16 bits, rounding to nearest even and keeping NaN a (quiet) NaN, as
/// ggml's `ggml_compute_fp32_to_bf16` does.
@inline(__always)
public func floatToBF16(_ value: Float) -> UInt16 {
    let u = value.bitPattern
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return UInt16(truncatingIfNeeded: u >> 16) | 0x40
    }
    let rounded = u &+ (0x7FFF &+ ((u >> 16) & 1))
    return UInt16(truncatingIfNeeded: rounded >> 16)
}
