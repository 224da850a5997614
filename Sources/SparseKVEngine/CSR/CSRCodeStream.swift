import Foundation
import SparseCoding

/// The codes of one layer's keys (or values) in a session: every head vector chunk coded
/// as s (index, coefficient) pairs over the group's offline atoms plus this session's
/// online atoms, and a guard bank of vectors kept exactly.
///
/// Rows are vector chunks in the order (token, KV head, chunk), each m = headDim / s_n
/// channels. Indices are packed to `width` bits in one little-endian bit stream,
/// coefficients are fp16 (or an fp16 scale per row and int8 per pair). Every array here
/// is session state and is counted by ``byteCount``; the encoder and the fp32 copy of the
/// atoms are derived from it.
final class CSRCodeStream {
    let m: Int
    let sparsity: Int
    let format: CoefficientFormat
    /// Bits per stored index, fixed for the session: covers N offline + the online budget.
    let width: Int
    let onlineBudget: Int
    let guardFraction: Double
    let guardError: Float
    let offline: SparseDictionary
    let algorithm: PursuitAlgorithm
    /// The shared encoder over the offline atoms (built by the codec on first use).
    private let offlineEncoderProvider: () throws -> MatchingPursuitEncoder

    /// (online, m) fp16 bit patterns of the online atoms (unit norm).
    var onlineAtoms: [UInt16] = []
    /// Packed indices of all rows, rows * sparsity values of `width` bits.
    var indexBytes: [UInt8] = []
    /// fp16 bits, (rows, s), when format is float16.
    var coefficients16: [UInt16] = []
    /// int8 codes (rows, s) and fp16 scales (rows), when format is int8.
    var coefficients8: [Int8] = []
    var scales: [UInt16] = []
    /// Rows kept exactly, ascending, and their fp16 contents (guard, m).
    var guardRows: [UInt32] = []
    var guardValues: [UInt16] = []
    var rows = 0

    /// Offline + online atoms as fp32, (N + online, m), and the encoder over them when
    /// there are online atoms (nil: the offline encoder).
    private(set) var atoms: [Float]
    private var sessionEncoder: MatchingPursuitEncoder?

    init(offline: SparseDictionary, encoder: @escaping () throws -> MatchingPursuitEncoder, settings: CSRSettings, sparsity: Int) {
        m = offline.dimension
        self.sparsity = sparsity
        format = settings.coefficients
        onlineBudget = settings.onlineAtoms
        guardFraction = settings.guardFraction
        guardError = settings.guardError
        width = CSRCodec.indexWidth(atoms: offline.atomCount + settings.onlineAtoms)
        self.offline = offline
        algorithm = settings.algorithm
        offlineEncoderProvider = encoder
        atoms = offline.atoms
    }

    private func encoder() throws -> MatchingPursuitEncoder {
        if let e = sessionEncoder { return e }
        return try offlineEncoderProvider()
    }

    var onlineCount: Int { onlineAtoms.count / m }

    /// Every byte of session state.
    var byteCount: Int {
        indexBytes.count + coefficients16.count * 2 + coefficients8.count + scales.count * 2
            + onlineAtoms.count * 2 + guardRows.count * 4 + guardValues.count * 2
    }

    // MARK: - Coding

    /// Codes `count` rows (count, m) and appends them.
    func append(_ x: UnsafePointer<Float>, count: Int) throws {
        guard count > 0 else { return }
        if rows == 0 && onlineBudget > 0 && onlineAtoms.isEmpty { try chooseOnlineAtoms(x, count: count) }
        let s = sparsity
        var idx = [UInt16](repeating: 0, count: count * s)  // (count, s)
        var coef = [Float](repeating: 0, count: count * s)  // (count, s)
        let encoder = try encoder()
        idx.withUnsafeMutableBufferPointer { ip in
            coef.withUnsafeMutableBufferPointer { cp in
                encoder.encode(count: count, vectors: x, indices: ip.baseAddress!, coefficients: cp.baseAddress!)
            }
        }
        storeCoefficients(&coef, count: count)
        appendIndices(idx)
        if guardFraction > 0 { addGuards(x, count: count, indices: idx, coefficients: coef) }
        rows += count
    }

    /// Rounds `coef` to the stored format in place (so guard decisions see what decoding
    /// will give) and appends the stored form.
    private func storeCoefficients(_ coef: inout [Float], count: Int) {
        let s = sparsity
        switch format {
        case .float16:
            for i in coef.indices {
                let h = HalfPrecision.bits(coef[i])
                coefficients16.append(h)
                coef[i] = HalfPrecision.float(h)
            }
        case .int8:
            for r in 0..<count {
                var peak: Float = 0
                for k in 0..<s { peak = max(peak, abs(coef[r * s + k])) }
                let h = HalfPrecision.bits(peak / 127)
                scales.append(h)
                let scale = HalfPrecision.float(h), inverse: Float = scale > 0 ? 1 / scale : 0
                for k in 0..<s {
                    let q = max(-127, min(127, (coef[r * s + k] * inverse).rounded()))
                    coefficients8.append(Int8(q))
                    coef[r * s + k] = q * scale
                }
            }
        }
    }

    func appendIndices(_ idx: [UInt16]) {
        var bit = rows * sparsity * width
        indexBytes.append(contentsOf: repeatElement(0, count: (bit + idx.count * width + 7) / 8 - indexBytes.count))
        for v in idx {
            var value = UInt32(v), left = width
            while left > 0 {
                let byte = bit / 8, off = bit % 8, take = min(8 - off, left)
                indexBytes[byte] |= UInt8(truncatingIfNeeded: (value & ((1 << take) - 1)) << off)
                value >>= UInt32(take)
                bit += take
                left -= take
            }
        }
    }

    /// Reconstruction of one row from codes already rounded to the stored format.
    private func reconstruct(_ idx: ArraySlice<UInt16>, _ coef: ArraySlice<Float>, into out: inout [Float]) {
        for i in 0..<m { out[i] = 0 }
        for (j, c) in zip(idx, coef) {
            let base = Int(j) * m
            for i in 0..<m { out[i] += c * atoms[base + i] }
        }
    }

    /// Guard bank: rows whose relative squared error exceeds `guardError`, worst first,
    /// while the bank stays within `guardFraction` of all rows.
    private func addGuards(_ x: UnsafePointer<Float>, count: Int, indices: [UInt16], coefficients: [Float]) {
        let budget = Int(guardFraction * Double(rows + count)) - guardRows.count
        guard budget > 0 else { return }
        var out = [Float](repeating: 0, count: m)
        var candidates: [(row: Int, error: Float)] = []
        for r in 0..<count {
            reconstruct(indices[r * sparsity..<(r + 1) * sparsity], coefficients[r * sparsity..<(r + 1) * sparsity], into: &out)
            let rel = out.withUnsafeBufferPointer { Self.relativeError(x + r * m, $0.baseAddress!, m) }
            if rel > guardError { candidates.append((r, rel)) }
        }
        let kept = candidates.sorted { $0.error > $1.error }.prefix(budget).map(\.row).sorted()
        for r in kept {
            guardRows.append(UInt32(rows + r))
            for i in 0..<m { guardValues.append(HalfPrecision.bits(x[r * m + i])) }
        }
    }

    /// ||x - y||² / ||x||² over m values (0 for x = 0).
    static func relativeError(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ m: Int) -> Float {
        var err: Float = 0, norm: Float = 0
        for i in 0..<m {
            err += (x[i] - y[i]) * (x[i] - y[i])
            norm += x[i] * x[i]
        }
        return norm > 0 ? err / norm : 0
    }

    /// Index `k` of a stream of `width`-bit values (width <= 16: it spans at most 3 bytes).
    @inline(__always)
    static func readIndex(_ bytes: UnsafePointer<UInt8>, _ k: Int, width w: Int) -> Int {
        let bit = k * w, byte = bit >> 3, off = bit & 7
        var word = Int(bytes[byte])
        if off + w > 8 { word |= Int(bytes[byte + 1]) << 8 }
        if off + w > 16 { word |= Int(bytes[byte + 2]) << 16 }
        return (word >> off) & ((1 << w) - 1)
    }

    /// Reverse sequential sampling: walking the prompt's rows from the last to the first,
    /// a row becomes an online atom when the offline atoms fit it worse than half the
    /// median row's error (rows they fit well would waste an atom) and no online atom chosen so far points the same way (|cos| > 0.9), until the
    /// budget is spent. Recent tokens are looked at first because they predict what the
    /// following tokens look like best.
    private func chooseOnlineAtoms(_ x: UnsafePointer<Float>, count: Int) throws {
        let codes = try offlineEncoderProvider().encode(Array(UnsafeBufferPointer(start: x, count: count * m)), count: count)
        let fit = try offline.decode(codes)  // (count, m)
        var errors = [Float](repeating: 0, count: count)
        for r in 0..<count {
            errors[r] = fit.withUnsafeBufferPointer { Self.relativeError(x + r * m, $0.baseAddress! + r * m, m) }
        }
        let median = errors.sorted()[count / 2]
        var chosen: [Float] = []  // (k, m) unit vectors
        var r = count - 1
        while r >= 0 && chosen.count / m < onlineBudget {
            defer { r -= 1 }
            guard errors[r] > median / 2 else { continue }
            var norm: Float = 0
            for i in 0..<m { norm += x[r * m + i] * x[r * m + i] }
            guard norm > 1e-12 else { continue }
            let u = (0..<m).map { Float(Float16(x[r * m + $0] / norm.squareRoot())) }
            var similar = false
            for a in 0..<chosen.count / m {
                var dot: Float = 0
                for i in 0..<m { dot += u[i] * chosen[a * m + i] }
                if abs(dot) > 0.9 { similar = true; break }
            }
            if !similar { chosen += u }
        }
        guard !chosen.isEmpty else { return }
        try setOnlineAtoms(chosen.map { HalfPrecision.bits($0) })
    }

    /// Installs online atoms (fp16 bits, (k, m)) and rebuilds the encoder over offline + online.
    func setOnlineAtoms(_ bits: [UInt16]) throws {
        let k = bits.count / m
        guard k <= onlineBudget, bits.count == k * m else {
            throw KVCacheError.malformedPayload("\(k) online atoms, the settings allow \(onlineBudget)")
        }
        onlineAtoms = bits
        if k == 0 {
            atoms = offline.atoms
            sessionEncoder = nil
            return
        }
        do {
            let d = try SparseDictionary(atoms: offline.atoms + bits.map { HalfPrecision.float($0) },
                                         atomCount: offline.atomCount + k, dimension: m)
            atoms = d.atoms
            sessionEncoder = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: sparsity, algorithm: algorithm, keepsGram: false))
        } catch let e as SparseCodingError {
            throw KVCacheError.malformedPayload("online atoms: \(e.localizedDescription)")
        }
    }

    // MARK: - Decoding

    /// Writes row `r` (m floats) to `out`, ignoring the guard bank.
    @inline(__always)
    func decodeRow(_ r: Int, into out: UnsafeMutablePointer<Float>, atoms a: UnsafePointer<Float>,
                   indexBytes ib: UnsafePointer<UInt8>) {
        let s = sparsity, w = width
        out.initialize(repeating: 0, count: m)
        for k in 0..<s {
            let j = Self.readIndex(ib, r * s + k, width: w)
            let c: Float
            switch format {
            case .float16: c = HalfPrecision.float(coefficients16[r * s + k])
            case .int8: c = Float(coefficients8[r * s + k]) * HalfPrecision.float(scales[r])
            }
            let atom = a + j * m
            for i in 0..<m { out[i] += c * atom[i] }
        }
    }

    // MARK: - Truncation

    /// Keeps the first `keep` rows. Online atoms stay unless nothing is left.
    func truncate(rows keep: Int) {
        guard keep < rows else { return }
        if keep == 0 {
            try? setOnlineAtoms([])
        }
        let bits = keep * sparsity * width
        indexBytes.removeLast(indexBytes.count - (bits + 7) / 8)
        if bits % 8 != 0, let last = indexBytes.indices.last {
            indexBytes[last] &= UInt8((1 << (bits % 8)) - 1)
        }
        switch format {
        case .float16: coefficients16.removeLast(coefficients16.count - keep * sparsity)
        case .int8:
            coefficients8.removeLast(coefficients8.count - keep * sparsity)
            scales.removeLast(scales.count - keep)
        }
        let g = guardRows.firstIndex { Int($0) >= keep } ?? guardRows.count
        guardRows.removeLast(guardRows.count - g)
        guardValues.removeLast(guardValues.count - g * m)
        rows = keep
    }
}
