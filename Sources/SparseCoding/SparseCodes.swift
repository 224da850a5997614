/// The sparse codes of a batch of B vectors: s (atom index, coefficient) pairs each, in
/// the order Matching Pursuit chose them. A vector is approximated by
/// sum_k coefficients[b, k] * atom(indices[b, k]).
///
/// Every index is below ``atomCount``; the initializer checks it, so decoding and packing
/// need not.
public struct SparseCodes: Sendable, Equatable {
    /// B, the number of coded vectors.
    public let count: Int
    /// s, the pairs per vector.
    public let sparsity: Int
    /// N of the dictionary the indices refer to.
    public let atomCount: Int
    /// (B, s) row-major atom indices.
    public let indices: [UInt16]
    /// (B, s) row-major coefficients.
    public let coefficients: [Float]

    /// Codes from their parts.
    ///
    /// - Throws: `SparseCodingError.badCodeShape` when the arrays are not (count, sparsity)
    ///   or sparsity is outside 1 ... ``PackedCodes/maxSparsity``,
    ///   `.indexOutOfRange` when an index is not below `atomCount`.
    public init(count: Int, sparsity: Int, atomCount: Int, indices: [UInt16], coefficients: [Float]) throws {
        guard count >= 0, sparsity >= 1, sparsity <= PackedCodes.maxSparsity,
              atomCount >= 1, atomCount <= SparseDictionary.maxAtomCount,
              !count.multipliedReportingOverflow(by: sparsity).overflow,
              indices.count == count * sparsity, coefficients.count == count * sparsity
        else {
            throw SparseCodingError.badCodeShape(count: count, sparsity: sparsity,
                                                 indices: indices.count, coefficients: coefficients.count)
        }
        if let p = indices.firstIndex(where: { Int($0) >= atomCount }) {
            throw SparseCodingError.indexOutOfRange(position: p, index: Int(indices[p]), atomCount: atomCount)
        }
        self.init(unchecked: count, sparsity: sparsity, atomCount: atomCount, indices: indices, coefficients: coefficients)
    }

    /// For producers that guarantee the invariants themselves (the encoder, the unpacker).
    init(unchecked count: Int, sparsity: Int, atomCount: Int, indices: [UInt16], coefficients: [Float]) {
        self.count = count
        self.sparsity = sparsity
        self.atomCount = atomCount
        self.indices = indices
        self.coefficients = coefficients
    }

    /// The pairs of vector `b`, in selection order.
    public func pairs(of b: Int) -> [(index: Int, coefficient: Float)] {
        (0..<sparsity).map { (Int(indices[b * sparsity + $0]), coefficients[b * sparsity + $0]) }
    }
}
