/// Range asymmetric numeral systems (rANS, J. Duda) over a static ``FrequencyTable``:
/// one 32-bit state, renormalised a byte at a time, as in the well-known byte-wise rANS
/// coders.
///
/// Stream layout: the final encoder state, 4 bytes big-endian, then the renormalisation
/// bytes in the order the decoder reads them, then the CRC-32 of all those bytes (4 bytes
/// little-endian). The encoder runs over the symbols backwards, so the decoder gives them
/// forwards. A decoder knows the symbol count from the container; it refuses a stream
/// whose checksum does not match (damaged bytes: the final-state check alone let a rare
/// flip through) or that does not end exactly on its last byte with the state the
/// encoder started from (wrong tables or count).
public enum RANSCoder {
    /// Lower bound of the normalised state interval [L, 256 L).
    static let lowerBound: UInt32 = 1 << 23

    /// Codes `symbols` (each below the table's symbol count).
    ///
    /// - Throws: `EntropyCodingError.symbolOutOfRange`.
    public static func encode(_ symbols: [Int], table: FrequencyTable) throws -> [UInt8] {
        var stack: [UInt8] = []  // bytes in emission order; the stream is its reverse
        stack.reserveCapacity(symbols.count + 4)
        var x = lowerBound
        let n = table.symbolCount, scale = UInt32(FrequencyTable.scaleBits)
        try table.frequencies.withUnsafeBufferPointer { freq in
            try table.starts.withUnsafeBufferPointer { starts in
                for p in stride(from: symbols.count - 1, through: 0, by: -1) {
                    let s = symbols[p]
                    guard s >= 0, s < n else { throw EntropyCodingError.symbolOutOfRange(position: p, symbol: s, symbols: n) }
                    let f = freq[s]
                    let limit = ((lowerBound >> scale) << 8) * f
                    while x >= limit {
                        stack.append(UInt8(truncatingIfNeeded: x))
                        x >>= 8
                    }
                    x = ((x / f) << scale) + (x % f) + starts[s]
                }
            }
        }
        for _ in 0..<4 {
            stack.append(UInt8(truncatingIfNeeded: x))
            x >>= 8
        }
        var out = [UInt8](stack.reversed())
        let crc = out.withUnsafeBytes { CRC32.update(0, $0) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: crc >> (8 * i))) }
        return out
    }

    /// Decodes `count` symbols from `bytes`.
    ///
    /// - Throws: `EntropyCodingError.corruptStream` when the stream is too short, has
    ///   bytes left over, or does not end in the encoder's initial state.
    public static func decode(_ stream: [UInt8], count: Int, table: FrequencyTable) throws -> [Int] {
        guard stream.count >= 8 else { throw EntropyCodingError.corruptStream("\(stream.count) bytes, the state and checksum alone take 8") }
        let bytes = Array(stream.dropLast(4))
        let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(stream[stream.count - 4 + $1]) << (8 * $1) }
        guard bytes.withUnsafeBytes({ CRC32.update(0, $0) }) == stored else { throw EntropyCodingError.corruptStream("checksum mismatch") }
        var x = UInt32(bytes[0]) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3])
        guard x >= lowerBound, x < lowerBound << 8 else { throw EntropyCodingError.corruptStream("initial state out of range") }
        var at = 4
        var out = [Int](repeating: 0, count: max(0, count))
        let scale = UInt32(FrequencyTable.scaleBits), mask = UInt32(FrequencyTable.total - 1)
        let ok: Bool = table.frequencies.withUnsafeBufferPointer { freq in
            table.starts.withUnsafeBufferPointer { starts in
                bytes.withUnsafeBufferPointer { b in
                    for p in 0..<max(0, count) {
                        let slot = x & mask
                        let s = table.symbol(forSlot: slot)
                        out[p] = s
                        x = freq[s] * (x >> scale) + slot - starts[s]
                        while x < lowerBound {
                            guard at < b.count else { return false }
                            x = x << 8 | UInt32(b[at])
                            at += 1
                        }
                    }
                    return true
                }
            }
        }
        guard ok else { throw EntropyCodingError.corruptStream("it ends before its \(count) symbols are decoded") }
        guard at == bytes.count else { throw EntropyCodingError.corruptStream("\(bytes.count - at) bytes left after \(count) symbols") }
        guard x == lowerBound else { throw EntropyCodingError.corruptStream("final state does not match") }
        return out
    }
}
