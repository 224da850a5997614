import Foundation

/// Why a sparse-coding operation failed. Every case carries the values that were wrong,
/// so the message tells the caller what to change.
public enum SparseCodingError: LocalizedError, Sendable, Equatable {
    // MARK: - Dictionary
    case badDictionaryShape(atomCount: Int, dimension: Int, elements: Int)
    case tooManyAtoms(atomCount: Int, limit: Int)
    case zeroAtom(index: Int)
    case nonFiniteAtom(index: Int)
    case gramTooLarge(atomCount: Int, bytes: Int, limit: Int)

    // MARK: - Encoding and decoding
    case badSparsity(sparsity: Int, atomCount: Int, algorithm: String)
    case badVectorCount(elements: Int, dimension: Int, count: Int)
    case badCodeShape(count: Int, sparsity: Int, indices: Int, coefficients: Int)
    case indexOutOfRange(position: Int, index: Int, atomCount: Int)
    case dictionaryMismatch(codesAtomCount: Int, dictionaryAtomCount: Int)
    case rowsOutOfRange(rows: Range<Int>, count: Int)

    // MARK: - Packing
    case coefficientOutOfRange(position: Int, value: Float, format: String)

    // MARK: - Serialized codes
    case truncated(needed: Int, available: Int)
    case trailingBytes(expected: Int, available: Int)
    case badMagic(found: UInt32)
    case unsupportedVersion(found: UInt16, supported: UInt16)
    case unknownCoefficientFormat(code: UInt8)
    case malformedHeader(String)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case nonFiniteCoefficient(position: Int)

    public var errorDescription: String? {
        switch self {
        case .badDictionaryShape(let n, let m, let e):
            return "dictionary of \(n) atoms of dimension \(m) needs \(n) x \(m) values, got \(e). "
                + "Atoms are stored (N, m) row-major; both N and m must be at least 1."
        case .tooManyAtoms(let n, let l):
            return "dictionary has \(n) atoms; at most \(l) are supported (indices are 16-bit). Use fewer atoms."
        case .zeroAtom(let i):
            return "atom \(i) is all zeros and cannot be normalized. Remove it or replace it."
        case .nonFiniteAtom(let i):
            return "atom \(i) contains NaN or infinity (or overflows when normalized). Check the dictionary source."
        case .gramTooLarge(let n, let b, let l):
            return "the Gram matrix of \(n) atoms would take \(b) bytes, above the limit of \(l). Use fewer atoms."
        case .badSparsity(let s, let n, let a):
            return "\(a) cannot use sparsity \(s) with \(n) atoms (need 1 <= s <= "
                + (a == "OMP" ? "N)." : "\(PackedCodes.maxSparsity)).")
        case .badVectorCount(let e, let m, let c):
            return "\(c) vectors of dimension \(m) need \(c) x \(m) values, got \(e)."
        case .badCodeShape(let c, let s, let i, let k):
            return "codes for \(c) vectors with sparsity \(s) need \(c) x \(s) indices and coefficients, "
                + "got \(i) indices and \(k) coefficients."
        case .indexOutOfRange(let p, let i, let n):
            return "code \(p) refers to atom \(i), but the dictionary has only \(n) atoms."
        case .dictionaryMismatch(let c, let d):
            return "codes were made for a dictionary of \(c) atoms, this dictionary has \(d). Decode with the dictionary that encoded them."
        case .rowsOutOfRange(let r, let c):
            return "rows \(r.lowerBound)..<\(r.upperBound) requested from codes of \(c) vectors."
        case .coefficientOutOfRange(let p, let v, let f):
            return "coefficient \(p) (\(v)) cannot be stored as \(f) (NaN, infinite or beyond the format's range). "
                + "Check the input vectors for NaN or huge values."
        case .truncated(let n, let a):
            return "serialized codes are truncated: \(n) bytes needed, \(a) available."
        case .trailingBytes(let e, let a):
            return "serialized codes should be \(e) bytes long, got \(a). The buffer holds something else after the codes."
        case .badMagic(let m):
            return "not serialized sparse codes (magic 0x\(String(m, radix: 16)), expected 0x\(String(PackedCodes.magic, radix: 16)) \"SKPC\")."
        case .unsupportedVersion(let f, let s):
            return "serialized codes have format version \(f); this build reads version \(s). Upgrade the reader or re-encode."
        case .unknownCoefficientFormat(let c):
            return "serialized codes use coefficient format \(c), which this build does not know (1 = fp16, 2 = int8)."
        case .malformedHeader(let w):
            return "serialized codes have a malformed header: \(w)."
        case .checksumMismatch(let s, let c):
            return "serialized codes are corrupt: checksum 0x\(String(c, radix: 16)) does not match the stored 0x\(String(s, radix: 16))."
        case .nonFiniteCoefficient(let p):
            return "serialized codes hold a NaN or infinite coefficient (or scale) at position \(p)."
        }
    }
}
