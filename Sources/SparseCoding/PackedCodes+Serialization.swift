/// The serialized form of ``PackedCodes``: a fixed header, then the payload.
///
///     offset  size  field (all little-endian)
///          0     4  magic "SKPC"
///          4     2  format version (1)
///          6     1  coefficient format (1 = fp16, 2 = int8)
///          7     1  bits per index, must equal ceil(log2 N)
///          8     4  N, atoms in the dictionary (1 ... 65536)
///         12     4  s, pairs per vector (1 ... maxSparsity)
///         16     8  B, coded vectors (0 ... maxCount)
///         24     4  CRC-32 of bytes 0 ..< 24 followed by the payload
///         28     -  payload (layout in PackedCodes.swift)
///
/// A reader checks every field, the exact length and the checksum before it trusts the
/// payload, and then every index (< N) and coefficient (finite), so that no input makes
/// it crash or return codes that decode out of bounds.
extension PackedCodes {
    /// "SKPC" read as a little-endian UInt32.
    public static let magic: UInt32 = 0x4350_4B53
    /// Format version written, and the only one read.
    public static let formatVersion: UInt16 = 1
    /// Bytes before the payload.
    public static let headerByteCount = 28
    /// Largest s a reader accepts.
    public static let maxSparsity = 1 << 16
    /// Largest B a reader accepts (keeps every size computation far from overflow).
    public static let maxCount = 1 << 40

    /// Header and payload, ``byteCount`` bytes.
    public func serialized() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        out.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: Self.formatVersion.littleEndian, toByteOffset: 4, as: UInt16.self)
            raw.storeBytes(of: coefficientFormat.rawValue, toByteOffset: 6, as: UInt8.self)
            raw.storeBytes(of: UInt8(bitsPerIndex), toByteOffset: 7, as: UInt8.self)
            raw.storeBytes(of: UInt32(atomCount).littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt32(sparsity).littleEndian, toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: UInt64(count).littleEndian, toByteOffset: 16, as: UInt64.self)
            payload.withUnsafeBytes { p in
                if let src = p.baseAddress, let dst = raw.baseAddress { (dst + Self.headerByteCount).copyMemory(from: src, byteCount: p.count) }
                let crc = CRC32.update(CRC32.update(0, UnsafeRawBufferPointer(rebasing: raw[0..<24])), p)
                raw.storeBytes(of: crc.littleEndian, toByteOffset: 24, as: UInt32.self)
            }
        }
        return out
    }

    /// Reads codes that fill `bytes` exactly.
    ///
    /// - Throws: a `SparseCodingError` naming what is wrong: `.truncated`,
    ///   `.trailingBytes`, `.badMagic`, `.unsupportedVersion`, `.unknownCoefficientFormat`,
    ///   `.malformedHeader`, `.checksumMismatch`, `.indexOutOfRange`, `.nonFiniteCoefficient`.
    public init(serialized bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { raw in
            let (codes, used) = try Self.read(from: raw)
            guard used == raw.count else { throw SparseCodingError.trailingBytes(expected: used, available: raw.count) }
            return codes
        }
    }

    /// Reads codes from the start of `bytes`, which may continue with other data.
    ///
    /// - Returns: the codes and the number of bytes they took.
    /// - Throws: as ``init(serialized:)``, except `.trailingBytes`.
    public static func read(from bytes: UnsafeRawBufferPointer) throws -> (codes: PackedCodes, byteCount: Int) {
        guard bytes.count >= headerByteCount else {
            throw SparseCodingError.truncated(needed: headerByteCount, available: bytes.count)
        }
        let magic = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        guard magic == Self.magic else { throw SparseCodingError.badMagic(found: magic) }
        let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        guard version == formatVersion else {
            throw SparseCodingError.unsupportedVersion(found: version, supported: formatVersion)
        }
        let formatCode = bytes[6]
        guard let format = CoefficientFormat(rawValue: formatCode) else {
            throw SparseCodingError.unknownCoefficientFormat(code: formatCode)
        }
        let bits = Int(bytes[7])
        let n = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let s = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let rawCount = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let storedCRC = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
        guard (1...SparseDictionary.maxAtomCount).contains(n) else {
            throw SparseCodingError.malformedHeader("atom count \(n) outside 1...\(SparseDictionary.maxAtomCount)")
        }
        guard bits == BitPacking.width(atomCount: n) else {
            throw SparseCodingError.malformedHeader("\(bits) bits per index for \(n) atoms (expected \(BitPacking.width(atomCount: n)))")
        }
        guard (1...maxSparsity).contains(s) else {
            throw SparseCodingError.malformedHeader("sparsity \(s) outside 1...\(maxSparsity)")
        }
        guard rawCount <= UInt64(maxCount) else {
            throw SparseCodingError.malformedHeader("vector count \(rawCount) above \(maxCount)")
        }
        // B <= 2^40 and s <= 2^16: every size below fits an Int with room to spare.
        let b = Int(rawCount)
        let indexBytes = BitPacking.byteCount(count: b * s, width: bits)
        let payloadBytes = indexBytes + format.byteCount(count: b, sparsity: s)
        let total = headerByteCount + payloadBytes
        guard bytes.count >= total else { throw SparseCodingError.truncated(needed: total, available: bytes.count) }

        let payload = UnsafeRawBufferPointer(rebasing: bytes[headerByteCount..<total])
        let crc = CRC32.update(CRC32.update(0, UnsafeRawBufferPointer(rebasing: bytes[0..<24])), payload)
        guard crc == storedCRC else { throw SparseCodingError.checksumMismatch(stored: storedCRC, computed: crc) }

        let codes = PackedCodes(count: b, sparsity: s, atomCount: n, coefficientFormat: format, payload: Array(payload))
        try codes.validatePayload()
        return (codes, total)
    }

    /// Checks what the checksum cannot vouch for when the writer itself was wrong: indices
    /// below N and finite coefficients and scales.
    private func validatePayload() throws {
        let pairs = count * sparsity, bits = bitsPerIndex
        try payload.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress, pairs > 0 else { return }
            if atomCount < (1 << bits) {
                // Unpack in blocks so that a large payload needs little extra memory.
                let block = 4096
                var scratch = [UInt16](repeating: 0, count: block)
                try scratch.withUnsafeMutableBufferPointer { buf in
                    guard let out = buf.baseAddress else { return }
                    var first = 0
                    while first < pairs {
                        let c = min(block, pairs - first)
                        BitPacking.unpack(base, first: first, count: c, width: bits, into: out)
                        for i in 0..<c where Int(out[i]) >= atomCount {
                            throw SparseCodingError.indexOutOfRange(position: first + i, index: Int(out[i]), atomCount: atomCount)
                        }
                        first += c
                    }
                }
            }
            let coef = UnsafeRawPointer(base + indexByteCount)
            let halves = coefficientFormat == .float16 ? pairs : count
            for i in 0..<halves {
                let h = UInt16(littleEndian: coef.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                guard HalfPrecision.isFinite(h) else { throw SparseCodingError.nonFiniteCoefficient(position: i) }
            }
        }
    }
}
