/// Sparse codes in their compact stored form: every index in ceil(log2 N) bits, every
/// coefficient in binary16 or 8 bits.
///
/// Payload layout (B vectors, s pairs each, b = ceil(log2 N) bits per index):
///
///     indices       ceil(B * s * b / 8) bytes   bit stream, pair i in bits [i b, (i + 1) b),
///                                               little-endian (see BitPacking), pairs in (B, s) order
///     coefficients  .float16: B * s * 2 bytes   binary16, little-endian, (B, s) order
///                   .int8:    B * 2 bytes       per-vector binary16 scale = max_k |c_k| / 127
///                             + B * s bytes     int8 q, c = q * scale, (B, s) order
///
/// ``serialized()`` puts a ``headerByteCount``-byte header in front (see
/// PackedCodes+Serialization.swift).
public struct PackedCodes: Sendable, Equatable {
    /// B, the number of coded vectors.
    public let count: Int
    /// s, the pairs per vector.
    public let sparsity: Int
    /// N of the dictionary the indices refer to.
    public let atomCount: Int
    /// How coefficients are stored.
    public let coefficientFormat: CoefficientFormat
    /// The layout above, exactly ``payloadByteCount`` bytes.
    public let payload: [UInt8]

    /// Bits per index: ceil(log2 N) (0 when N = 1).
    public var bitsPerIndex: Int { BitPacking.width(atomCount: atomCount) }

    /// Bytes of the index stream: ceil(B * s * bitsPerIndex / 8).
    public var indexByteCount: Int { BitPacking.byteCount(count: count * sparsity, width: bitsPerIndex) }

    /// Bytes of the coefficients (and int8 scales).
    public var coefficientByteCount: Int { coefficientFormat.byteCount(count: count, sparsity: sparsity) }

    /// Bytes held in memory: index stream + coefficients.
    public var payloadByteCount: Int { payload.count }

    /// Bytes of ``serialized()``: header + payload.
    public var byteCount: Int { Self.headerByteCount + payload.count }

    /// Serialized size of `count` vectors' codes, without making them.
    public static func byteCount(count: Int, sparsity: Int, atomCount: Int, format: CoefficientFormat) -> Int {
        headerByteCount + BitPacking.byteCount(count: count * sparsity, width: BitPacking.width(atomCount: atomCount))
            + format.byteCount(count: count, sparsity: sparsity)
    }

    /// For the deserializer, which has checked the payload itself.
    init(count: Int, sparsity: Int, atomCount: Int, coefficientFormat: CoefficientFormat, payload: [UInt8]) {
        self.count = count
        self.sparsity = sparsity
        self.atomCount = atomCount
        self.coefficientFormat = coefficientFormat
        self.payload = payload
    }

    // MARK: - Packing

    /// Packs `codes`.
    ///
    /// - Throws: `SparseCodingError.coefficientOutOfRange` for a NaN or infinite
    ///   coefficient, or one beyond binary16's range (|c| > 65504 with `.float16`,
    ///   max |c| / 127 > 65504 with `.int8`).
    public init(_ codes: SparseCodes, format: CoefficientFormat = .float16) throws {
        let b = codes.count, s = codes.sparsity, width = BitPacking.width(atomCount: codes.atomCount)
        let indexBytes = BitPacking.byteCount(count: b * s, width: width)
        var bytes = [UInt8](repeating: 0, count: indexBytes + format.byteCount(count: b, sparsity: s))
        try bytes.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress else { return }  // no pairs at all
            codes.indices.withUnsafeBufferPointer { idx in
                if let ip = idx.baseAddress { BitPacking.pack(ip, count: b * s, width: width, into: base) }
            }
            let coef = UnsafeMutableRawPointer(base + indexBytes)
            switch format {
            case .float16: try Self.packHalf(codes.coefficients, into: coef)
            case .int8: try Self.packInt8(codes.coefficients, count: b, sparsity: s, into: coef)
            }
        }
        self.init(count: b, sparsity: s, atomCount: codes.atomCount, coefficientFormat: format, payload: bytes)
    }

    private static func packHalf(_ c: [Float], into out: UnsafeMutableRawPointer) throws {
        for (i, v) in c.enumerated() {
            let h = HalfPrecision.bits(v)
            guard HalfPrecision.isFinite(h) else {
                throw SparseCodingError.coefficientOutOfRange(position: i, value: v, format: CoefficientFormat.float16.name)
            }
            out.storeBytes(of: h.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
        }
    }

    private static func packInt8(_ c: [Float], count b: Int, sparsity s: Int, into out: UnsafeMutableRawPointer) throws {
        let values = out + 2 * b
        for row in 0..<b {
            var peak: Float = 0
            for k in 0..<s {
                let v = c[row * s + k]
                guard v.isFinite else {
                    throw SparseCodingError.coefficientOutOfRange(position: row * s + k, value: v, format: CoefficientFormat.int8.name)
                }
                peak = max(peak, abs(v))
            }
            let h = HalfPrecision.bits(peak / 127)
            guard HalfPrecision.isFinite(h) else {
                throw SparseCodingError.coefficientOutOfRange(position: row * s, value: peak, format: CoefficientFormat.int8.name)
            }
            out.storeBytes(of: h.littleEndian, toByteOffset: 2 * row, as: UInt16.self)
            // Quantize against the scale as stored, so the decoder's product is what was meant.
            let scale = HalfPrecision.float(h)
            let inverse: Float = scale > 0 ? 1 / scale : 0
            for k in 0..<s {
                let q = max(-127, min(127, (c[row * s + k] * inverse).rounded()))
                values.storeBytes(of: Int8(q), toByteOffset: row * s + k, as: Int8.self)
            }
        }
    }

    // MARK: - Unpacking

    /// All the codes.
    public func unpack() -> SparseCodes {
        unpackRows(0..<count)
    }

    /// The codes of vectors `rows` only, without unpacking the others.
    ///
    /// - Throws: `SparseCodingError.rowsOutOfRange` unless `rows` lies within 0..<count.
    public func unpack(rows: Range<Int>) throws -> SparseCodes {
        guard rows.lowerBound >= 0, rows.upperBound <= count else {
            throw SparseCodingError.rowsOutOfRange(rows: rows, count: count)
        }
        return unpackRows(rows)
    }

    private func unpackRows(_ rows: Range<Int>) -> SparseCodes {
        let s = sparsity, pairs = rows.count * s, first = rows.lowerBound * s
        var indices = [UInt16](repeating: 0, count: pairs)  // (rows, s)
        var coefficients = [Float](repeating: 0, count: pairs)  // (rows, s)
        let indexBytes = indexByteCount
        payload.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress, pairs > 0 else { return }
            indices.withUnsafeMutableBufferPointer { idx in
                if let ip = idx.baseAddress {
                    BitPacking.unpack(base, first: first, count: pairs, width: bitsPerIndex, into: ip)
                }
            }
            let coef = UnsafeRawPointer(base + indexBytes)
            switch coefficientFormat {
            case .float16:
                for i in 0..<pairs {
                    coefficients[i] = HalfPrecision.float(UInt16(littleEndian: coef.loadUnaligned(fromByteOffset: 2 * (first + i), as: UInt16.self)))
                }
            case .int8:
                let values = coef + 2 * count
                for (r, row) in rows.enumerated() {
                    let scale = HalfPrecision.float(UInt16(littleEndian: coef.loadUnaligned(fromByteOffset: 2 * row, as: UInt16.self)))
                    for k in 0..<s {
                        coefficients[r * s + k] = Float(values.load(fromByteOffset: row * s + k, as: Int8.self)) * scale
                    }
                }
            }
        }
        return SparseCodes(unchecked: rows.count, sparsity: s, atomCount: atomCount, indices: indices, coefficients: coefficients)
    }
}
