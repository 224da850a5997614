import CShims

/// Unpacking KIVI's packed codes for the fused attention kernels: a table per code width
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
    /// Whether 4-bit codes are widened by `sparsekv_kivi_unpack4_avx2` (`kivi_codes.h`), 16
    /// at a time, instead of through the table: the same floats.
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
