/// IEEE binary16 conversions, shared by coefficient storage here and GGUF dequantization
/// in the engine.
public enum HalfPrecision {
    /// Float to binary16 bits, rounding to nearest even. Values beyond ±65504 become
    /// infinite; callers check `isFinite(bits)` where that matters.
    @inlinable @inline(__always)
    public static func bits(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// binary16 bits to Float, exact for every input. Done with integer and float
    /// arithmetic rather than `Float16`, whose conversion is a library call on x86_64
    /// builds without F16C, so that it inlines into unpacking loops.
    @inlinable @inline(__always)
    public static func float(_ bits: UInt16) -> Float {
        let w = UInt32(bits) << 16
        let sign = w & 0x8000_0000
        let twice = w &+ w  // without the sign bit
        // Normal, infinite and NaN: shift exponent and mantissa into fp32 position, then
        // multiply by 2^-112 to move the exponent bias from 15 to 127.
        let normal = Float(bitPattern: (twice >> 4) &+ (0xE0 << 23)) * Float(bitPattern: 0x0780_0000)
        // Subnormal: the 10 mantissa bits under exponent 2^-1, minus 0.5, is mantissa * 2^-24.
        let subnormal = Float(bitPattern: (twice >> 17) | (126 << 23)) - 0.5
        let magnitude = twice < (1 << 27) ? subnormal.bitPattern : normal.bitPattern
        return Float(bitPattern: sign | magnitude)
    }

    /// Whether binary16 `bits` is neither infinite nor NaN.
    @inline(__always)
    public static func isFinite(_ bits: UInt16) -> Bool {
        bits & 0x7C00 != 0x7C00
    }
}
