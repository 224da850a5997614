import Testing
@testable import SparseCoding

// MARK: - Helpers

/// Random codes: indices uniform below N (always including N - 1 and 0), coefficients
/// Gaussian times `scale`.
private func randomCodes(count: Int, sparsity s: Int, atomCount n: Int, seed: UInt64, scale: Float = 1) throws -> SparseCodes {
    var rng = Xoshiro256StarStar(seed: seed)
    var indices = (0..<(count * s)).map { _ in UInt16(rng.next() % UInt64(n)) }
    if !indices.isEmpty {
        indices[0] = UInt16(n - 1)
        indices[indices.count - 1] = 0
    }
    let coefficients = (0..<(count * s)).map { _ in rng.nextGaussian() * scale }
    return try SparseCodes(count: count, sparsity: s, atomCount: n, indices: indices, coefficients: coefficients)
}

/// Packs to serialized bytes.
private func serialized(_ codes: SparseCodes, _ format: CoefficientFormat = .float16) throws -> [UInt8] {
    try PackedCodes(codes, format: format).serialized()
}

/// Rewrites the stored checksum so that a deliberately edited buffer passes that check
/// and reaches the validation behind it.
private func resealed(_ bytes: [UInt8]) -> [UInt8] {
    var out = bytes
    let crc = bytes.withUnsafeBytes { raw in
        CRC32.update(CRC32.update(0, UnsafeRawBufferPointer(rebasing: raw[0..<24])),
                     UnsafeRawBufferPointer(rebasing: raw[PackedCodes.headerByteCount...]))
    }
    for i in 0..<4 { out[24 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
    return out
}

private func readError(_ bytes: [UInt8]) -> SparseCodingError? {
    do {
        _ = try PackedCodes(serialized: bytes)
        return nil
    } catch let e as SparseCodingError {
        return e
    } catch {
        return nil
    }
}

// MARK: - Round trips and sizes

@Test(arguments: [2, 255, 256, 1000, 4096, 65536], [1, 4, 16])
func packedCodesRoundTripWithExactSize(atomCount n: Int, sparsity s: Int) throws {
    let count = 37  // odd, so the index stream ends mid-byte for most widths
    let codes = try randomCodes(count: count, sparsity: s, atomCount: n, seed: UInt64(n * 100 + s))
    let bits = [2: 1, 255: 8, 256: 8, 1000: 10, 4096: 12, 65536: 16][n] ?? -1  // ceil(log2 N)
    #expect(BitPacking.width(atomCount: n) == bits)
    for format in CoefficientFormat.allCases {
        let packed = try PackedCodes(codes, format: format)
        let coefficientBytes = format == .float16 ? count * s * 2 : count * 2 + count * s
        let expected = (count * s * bits + 7) / 8 + coefficientBytes + PackedCodes.headerByteCount
        #expect(packed.byteCount == expected)
        #expect(PackedCodes.byteCount(count: count, sparsity: s, atomCount: n, format: format) == expected)
        let bytes = packed.serialized()
        #expect(bytes.count == expected)

        let back = try PackedCodes(serialized: bytes)
        #expect(back == packed)
        let unpacked = back.unpack()
        #expect(unpacked.indices == codes.indices)
        #expect(unpacked.count == count && unpacked.sparsity == s && unpacked.atomCount == n)
        if format == .float16 {
            // Exactly the binary16 rounding of every coefficient.
            #expect(unpacked.coefficients == codes.coefficients.map { Float(Float16($0)) })
        }
        // Packing what was unpacked changes nothing.
        #expect(try PackedCodes(unpacked, format: format) == packed)
    }
}

@Test func int8CoefficientsStayWithinTheStatedError() throws {
    for (seed, scale) in [(1, Float(1)), (2, 1e-3), (3, 250), (4, 1e-6)] {
        let codes = try randomCodes(count: 200, sparsity: 8, atomCount: 1024, seed: UInt64(seed), scale: scale)
        let back = try PackedCodes(codes, format: .int8).unpack()
        var worstRatio: Float = 0
        for b in 0..<200 {
            let row = codes.coefficients[(b * 8)..<((b + 1) * 8)]
            let bound = CoefficientFormat.int8ErrorBound(maxMagnitude: row.map { abs($0) }.max() ?? 0)
            for k in 0..<8 {
                let err = abs(back.coefficients[b * 8 + k] - codes.coefficients[b * 8 + k])
                #expect(err <= bound)
                worstRatio = max(worstRatio, err / bound)
            }
        }
        // The bound is not loose by orders of magnitude: some error comes near it.
        #expect(worstRatio > 0.5, "scale \(scale): worst error only \(worstRatio) of the bound")
    }
}

@Test func unpackingRowsMatchesSlicesOfTheWhole() throws {
    let codes = try randomCodes(count: 50, sparsity: 3, atomCount: 1000, seed: 5)
    for format in CoefficientFormat.allCases {
        let packed = try PackedCodes(codes, format: format)
        let all = packed.unpack()
        for rows in [0..<0, 0..<1, 7..<8, 13..<41, 49..<50, 0..<50] {
            let part = try packed.unpack(rows: rows)
            #expect(part.count == rows.count)
            #expect(part.indices == Array(all.indices[(rows.lowerBound * 3)..<(rows.upperBound * 3)]))
            #expect(part.coefficients == Array(all.coefficients[(rows.lowerBound * 3)..<(rows.upperBound * 3)]))
        }
        #expect(throws: SparseCodingError.rowsOutOfRange(rows: 45..<51, count: 50)) { try packed.unpack(rows: 45..<51) }
    }
}

@Test func emptyAndSingleAtomCodesRoundTrip() throws {
    let empty = try SparseCodes(count: 0, sparsity: 4, atomCount: 300, indices: [], coefficients: [])
    let bytes = try serialized(empty)
    #expect(bytes.count == PackedCodes.headerByteCount)
    #expect(try PackedCodes(serialized: bytes).unpack() == empty)
    // N = 1: indices take no bits at all.
    let single = try SparseCodes(count: 3, sparsity: 2, atomCount: 1, indices: [0, 0, 0, 0, 0, 0], coefficients: [1, 2, 3, 4, 5, 6])
    let packed = try PackedCodes(single)
    #expect(packed.indexByteCount == 0 && packed.byteCount == PackedCodes.headerByteCount + 12)
    #expect(try PackedCodes(serialized: packed.serialized()).unpack() == single)
}

@Test func bitStreamLayoutIsLittleEndian() throws {
    // Three 10-bit indices 0x3FF, 0x001, 0x2AA -> bits 0..9, 10..19, 20..29.
    let codes = try SparseCodes(count: 1, sparsity: 3, atomCount: 1024, indices: [0x3FF, 0x001, 0x2AA], coefficients: [1, -2, 0.5])
    let packed = try PackedCodes(codes)
    let stream: UInt32 = 0x3FF | (0x001 << 10) | (0x2AA << 20)
    #expect(Array(packed.payload[0..<4]) == (0..<4).map { UInt8((stream >> (8 * UInt32($0))) & 0xFF) })
    // binary16: 1 = 0x3C00, -2 = 0xC000, 0.5 = 0x3800, little-endian.
    #expect(Array(packed.payload[4...]) == [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38])
}

// MARK: - Values that cannot be packed

@Test func unrepresentableCoefficientsAreRejected() throws {
    let big = try SparseCodes(count: 1, sparsity: 2, atomCount: 4, indices: [0, 1], coefficients: [1, 70_000])
    #expect(throws: SparseCodingError.coefficientOutOfRange(position: 1, value: 70_000, format: "fp16")) { try PackedCodes(big) }
    _ = try PackedCodes(big, format: .int8)  // 70000 / 127 fits a binary16 scale
    let nan = try SparseCodes(count: 2, sparsity: 1, atomCount: 4, indices: [0, 1], coefficients: [1, .nan])
    for format in CoefficientFormat.allCases {
        #expect(throws: SparseCodingError.self) { try PackedCodes(nan, format: format) }
    }
}

// MARK: - Corrupt input

@Test(arguments: CoefficientFormat.allCases)
func everyTruncationIsRejected(_ format: CoefficientFormat) throws {
    let bytes = try serialized(try randomCodes(count: 9, sparsity: 4, atomCount: 1000, seed: 6), format)
    for length in 0..<bytes.count {
        let e = readError(Array(bytes[0..<length]))
        #expect(e != nil)
        if case .truncated = e {} else { Issue.record("length \(length): \(String(describing: e))") }
    }
    #expect(readError(bytes + [0]) == .trailingBytes(expected: bytes.count, available: bytes.count + 1))
    // read(from:) accepts data after the codes and says where they end.
    let (codes, used) = try (bytes + [1, 2, 3]).withUnsafeBytes { try PackedCodes.read(from: $0) }
    #expect(used == bytes.count && codes.serialized() == bytes)
}

@Test(arguments: CoefficientFormat.allCases)
func everySingleBitFlipIsRejected(_ format: CoefficientFormat) throws {
    let bytes = try serialized(try randomCodes(count: 5, sparsity: 3, atomCount: 700, seed: 7), format)
    for i in 0..<bytes.count {
        for bit in 0..<8 {
            var bad = bytes
            bad[i] ^= UInt8(1 << bit)
            #expect(readError(bad) != nil, "flip of bit \(bit) in byte \(i) was accepted")
        }
    }
}

@Test func headerFieldsAreChecked() throws {
    let good = try serialized(try randomCodes(count: 4, sparsity: 2, atomCount: 300, seed: 8))
    func edited(_ offset: Int, _ values: [UInt8]) -> [UInt8] {
        var b = good
        for (i, v) in values.enumerated() { b[offset + i] = v }
        return resealed(b)
    }
    #expect(readError(edited(0, [0x53, 0x4B, 0x56, 0x43])) == .badMagic(found: 0x4356_4B53))
    #expect(readError(edited(4, [2, 0])) == .unsupportedVersion(found: 2, supported: 1))
    #expect(readError(edited(6, [9])) == .unknownCoefficientFormat(code: 9))
    #expect(readError(edited(7, [8])) == .malformedHeader("8 bits per index for 300 atoms (expected 9)"))
    #expect(readError(edited(8, [0, 0, 0, 0])) == .malformedHeader("atom count 0 outside 1...65536"))
    #expect(readError(edited(8, [1, 0, 1, 0])) == .malformedHeader("atom count 65537 outside 1...65536"))
    #expect(readError(edited(12, [0, 0, 0, 0])) == .malformedHeader("sparsity 0 outside 1...65536"))
    #expect(readError(edited(16, [0, 0, 0, 0, 0, 0, 0, 0x80])) == .malformedHeader("vector count 9223372036854775808 above 1099511627776"))
    // A count that fits the limits but not the buffer is a truncation, found before any allocation.
    if case .truncated = readError(edited(16, [0, 0, 0, 0, 0, 1, 0, 0])) {} else { Issue.record("huge count not reported as truncated") }
    // A flipped payload bit fails the checksum.
    var flipped = good
    flipped[PackedCodes.headerByteCount] ^= 1
    if case .checksumMismatch = readError(flipped) {} else { Issue.record("checksum not checked") }
}

/// A writer that gets the payload wrong but the checksum right is caught by validation.
@Test func payloadValuesAreChecked() throws {
    // N = 300 needs 9 bits, so index values 300...511 are representable but invalid.
    let codes = try SparseCodes(count: 1, sparsity: 2, atomCount: 300, indices: [299, 5], coefficients: [1, 2])
    var bytes = try serialized(codes)
    let h = PackedCodes.headerByteCount
    bytes[h] = 0xFF  // first index becomes 0x1FF = 511
    bytes[h + 1] |= 0x01
    #expect(readError(resealed(bytes)) == .indexOutOfRange(position: 0, index: 511, atomCount: 300))

    var nanBytes = try serialized(codes)
    let coef = h + 3  // 18 index bits -> 3 bytes
    nanBytes[coef] = 0x00
    nanBytes[coef + 1] = 0x7E  // binary16 NaN
    #expect(readError(resealed(nanBytes)) == .nonFiniteCoefficient(position: 0))

    var infScale = try serialized(codes, .int8)
    infScale[coef] = 0x00
    infScale[coef + 1] = 0x7C  // binary16 +infinity as the vector's scale
    #expect(readError(resealed(infScale)) == .nonFiniteCoefficient(position: 0))
}

@Test func randomGarbageNeverCrashes() {
    var rng = Xoshiro256StarStar(seed: 99)
    for _ in 0..<2000 {
        let n = Int(rng.next() % 80)
        var bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // Half the time start with a valid magic and version so that later checks run.
        if n >= 6 && rng.next() & 1 == 0 {
            bytes.replaceSubrange(0..<6, with: [0x53, 0x4B, 0x50, 0x43, 1, 0])
        }
        #expect(readError(bytes) != nil)
    }
}

// MARK: - End to end

@Test func encodedVectorsSurviveSerialization() throws {
    let d = try SparseDictionary(randomAtomCount: 1024, dimension: 64, seed: 40)
    var sig = Signals(seed: 41)
    let x = sig.gaussian(count: 300, dimension: 64)
    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 8)).encode(x, count: 300)
    let exact = meanSquaredError(x, try d.decode(codes))
    for format in CoefficientFormat.allCases {
        let back = try PackedCodes(serialized: try serialized(codes, format)).unpack()
        #expect(back.indices == codes.indices)
        let mse = meanSquaredError(x, try d.decode(back))
        // Storage rounding adds far less error than the sparse approximation itself.
        #expect(mse < exact * 1.02, "\(format): \(mse) vs \(exact)")
    }
}
