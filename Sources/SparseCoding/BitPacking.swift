/// Fixed-width unsigned integers in a little-endian bit stream: value i occupies stream
/// bits [i * width, (i + 1) * width), least significant bit first, and stream bit j is bit
/// (j % 8) of byte j / 8. The last byte's unused high bits are zero.
public enum BitPacking {
    /// Bytes holding `count` values of `width` bits: ceil(count * width / 8).
    public static func byteCount(count: Int, width: Int) -> Int {
        (count * width + 7) / 8
    }

    /// Writes `count` values (each below 2^width, width <= 16) into `out`, which must hold
    /// `byteCount(count:width:)` bytes.
    public static func pack(_ values: UnsafePointer<UInt16>, count: Int, width: Int, into out: UnsafeMutablePointer<UInt8>) {
        guard width > 0, count > 0 else { return }
        var w = BitWriter(out)
        for i in 0..<count { w.put(UInt64(values[i]), bits: width) }
        w.finish()
    }

    /// Reads `count` values of `width` bits starting at value `first` of the stream in
    /// `bytes` (which must hold at least `byteCount(count: first + count, width:)` bytes).
    public static func unpack(_ bytes: UnsafePointer<UInt8>, first: Int, count: Int, width: Int,
                       into out: UnsafeMutablePointer<UInt16>) {
        guard width > 0, count > 0 else {
            out.initialize(repeating: 0, count: count)
            return
        }
        let mask = (UInt64(1) << UInt64(width)) - 1
        let startBit = first * width
        var p = startBit / 8
        var acc = UInt64(bytes[p]) >> UInt64(startBit % 8)
        var bits = 8 - startBit % 8
        p += 1
        for i in 0..<count {
            while bits < width {
                acc |= UInt64(bytes[p]) << UInt64(bits)
                p += 1
                bits += 8
            }
            out[i] = UInt16(truncatingIfNeeded: acc & mask)
            acc >>= UInt64(width)
            bits -= width
        }
    }

    /// Bits per index for a dictionary of `atomCount` atoms: ceil(log2 N), 0 for N = 1.
    static func width(atomCount: Int) -> Int {
        atomCount <= 1 ? 0 : Int.bitWidth - (atomCount - 1).leadingZeroBitCount
    }
}

/// Writes bits into a byte buffer in ``BitPacking``'s order (least significant first,
/// stream bit j is bit j % 8 of byte j / 8) through a 64-bit accumulator that leaves a
/// byte at a time. The buffer must be zero from the start bit on and hold every bit put.
public struct BitWriter {
    @usableFromInline let out: UnsafeMutablePointer<UInt8>
    @usableFromInline var acc: UInt64
    @usableFromInline var filled: Int
    @usableFromInline var at: Int

    /// Starts at stream bit `bit`, keeping the bits already below it in a shared byte.
    @inlinable
    public init(_ out: UnsafeMutablePointer<UInt8>, atBit bit: Int = 0) {
        self.out = out
        at = bit >> 3
        filled = bit & 7
        acc = filled == 0 ? 0 : UInt64(out[at]) & ((UInt64(1) << UInt64(filled)) - 1)
    }

    /// The low `n` bits of `value` (n at most 32).
    @inlinable @inline(__always)
    public mutating func put(_ value: UInt64, bits n: Int) {
        acc |= (value & ((UInt64(1) << UInt64(n)) - 1)) << UInt64(filled)
        filled += n
        while filled >= 8 {
            out[at] = UInt8(truncatingIfNeeded: acc)
            acc >>= 8
            filled -= 8
            at += 1
        }
    }

    /// Writes the last, partial byte.
    @inlinable
    public mutating func finish() {
        if filled > 0 { out[at] = UInt8(truncatingIfNeeded: acc) }
    }
}
