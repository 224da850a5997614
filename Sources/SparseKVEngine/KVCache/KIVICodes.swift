import CShims

/// KIVI's code format: unpacking packed codes for the fused attention kernels, and (an
/// extension below) making and packing them when groups are quantized. A table per code width
/// gives the floats of every possible byte, so a row of 64 4-bit codes is 32 table
/// reads of 8 bytes instead of 64 shifts, masks and conversions (with AVX2, 4-bit codes
/// are split, widened and converted 16 at a time instead, `kivi_codes.h`); the affine
/// step (minimum + scale * code) then runs on 8 channels at a time.
///
/// The results equal `KIVICache.decode`'s element for element: the same code values, and
/// the same multiply then add, each rounded.
enum KIVICodes {
    /// Byte b's four 2-bit codes, least significant first.
    private static let table2: [SIMD4<Float>] = (0..<256).map { (b: Int) -> SIMD4<Float> in
        let c0 = Float(b & 3), c1 = Float((b >> 2) & 3), c2 = Float((b >> 4) & 3), c3 = Float(b >> 6)
        return SIMD4(c0, c1, c2, c3)
    }
    /// Whether the AVX2 kernels of `kivi_codes.h` run: 4-bit codes widened 16 at a time
    /// instead of through the table, and codes made 8 at a time. The same results.
    static let avx2: Bool = {
        #if arch(x86_64)
        return sparsekv_cpu_has_avx2() != 0
        #else
        return false
        #endif
    }()
    /// Byte b's two 4-bit codes, low nibble first.
    private static let table4: [SIMD2<Float>] = (0..<256).map { (b: Int) -> SIMD2<Float> in
        SIMD2(Float(b & 15), Float(b >> 4))
    }

    /// `count` codes of `bits` (2, 4 or 8) bits each, packed least significant first from
    /// a byte boundary, as floats into out. `count` must fill whole bytes.
    @inline(__always)
    static func unpack(_ bytes: UnsafePointer<UInt8>, count: Int, bits: Int, into out: UnsafeMutablePointer<Float>) {
        let raw = UnsafeMutableRawPointer(out)
        switch bits {
        case 4:
            #if arch(x86_64)
            if avx2 { return sparsekv_kivi_unpack4_avx2(bytes, count / 2, out) }
            #endif
            table4.withUnsafeBufferPointer { t in
                for i in 0..<count / 2 { raw.storeBytes(of: t[Int(bytes[i])], toByteOffset: i * 8, as: SIMD2<Float>.self) }
            }
        case 2:
            table2.withUnsafeBufferPointer { t in
                for i in 0..<count / 4 { raw.storeBytes(of: t[Int(bytes[i])], toByteOffset: i * 16, as: SIMD4<Float>.self) }
            }
        default:
            for i in 0..<count { out[i] = Float(bytes[i]) }
        }
    }

    /// x[c] = offset[c] + scale[c] * x[c], per channel, 8 channels at a time.
    @inline(__always)
    static func affine(_ x: UnsafeMutablePointer<Float>, count: Int, scale: UnsafePointer<Float>,
                       offset: UnsafePointer<Float>) {
        let xr = UnsafeMutableRawPointer(x), sr = UnsafeRawPointer(scale), orr = UnsafeRawPointer(offset)
        var i = 0
        while i + 8 <= count {
            let v = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let r = orr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                + sr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * v
            xr.storeBytes(of: r, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            x[i] = offset[i] + scale[i] * x[i]
            i += 1
        }
    }

    /// x[c] = offset + scale * x[c] for one scale and offset, 8 channels at a time.
    @inline(__always)
    static func affine(_ x: UnsafeMutablePointer<Float>, count: Int, scale: Float, offset: Float) {
        let xr = UnsafeMutableRawPointer(x)
        let s = SIMD8<Float>(repeating: scale), o = SIMD8<Float>(repeating: offset)
        var i = 0
        while i + 8 <= count {
            let v = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            xr.storeBytes(of: o + s * v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            x[i] = offset + scale * x[i]
            i += 1
        }
    }
}

// MARK: - Codes one at a time, and making codes (KIVICache.quantizeOldestGroups)

extension KIVICodes {
    /// Code `i` of packed codes, `bits` each (KIVICache.decode reads them one at a time).
    @inline(__always)
    static func code(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int, bits: Int) -> UInt8 {
        (bytes[i * bits / 8] >> UInt8((i * bits) % 8)) & UInt8((1 << bits) - 1)
    }

    /// Packs `count` codes `bits` each, least significant first, into zeroed bytes; a byte
    /// at a time for 2, 4 and 8 bits (`count` filling whole bytes).
    static func pack(_ codes: UnsafePointer<UInt8>, count: Int, bits: Int, into out: UnsafeMutablePointer<UInt8>) {
        switch bits {
        case 8:
            out.update(from: codes, count: count)
        case 4 where count % 2 == 0:
            for j in 0..<count / 2 { out[j] = codes[2 * j] | codes[2 * j + 1] << 4 }
        case 2 where count % 4 == 0:
            for j in 0..<count / 4 {
                let c = codes + 4 * j
                out[j] = c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6
            }
        default:
            for i in 0..<count { out[i * bits / 8] |= codes[i] << UInt8((i * bits) % 8) }
        }
    }

    /// KIVI's codes of `count` values, each with its own scale and minimum (fp16, widened):
    /// (x - minimum) / scale rounded half away from zero, clamped to 0 ... 2^bits - 1 (NaN to
    /// 0); 0 where the scale is not positive (`kivi_codes.h`, 8 at a time with AVX2).
    @inline(__always)
    static func codes(_ x: UnsafePointer<Float>, scale: UnsafePointer<Float>, zero: UnsafePointer<Float>, count: Int,
                      bits: Int, into out: UnsafeMutablePointer<UInt8>) {
        let levels = Float((1 << bits) - 1)
        #if arch(x86_64)
        if avx2 { return sparsekv_kivi_codes_avx2(x, scale, zero, count, levels, out) }
        #endif
        sparsekv_kivi_codes(x, scale, zero, count, levels, out)
    }
}
