/// What ``MatchingPursuitEncoder/trace(_:count:)`` saw at every step, checked against a
/// direct computation rather than the encoder's own bookkeeping.
public struct PursuitTrace: Sendable {
    /// The codes, identical to what `encode` returns for the same input on one thread
    /// (more threads cut the batch into other chunks, which can change the last bit of a
    /// correlation and so of a coefficient).
    public let codes: SparseCodes
    /// (B, s + 1) ||x - sum_{j < k} c_j d_j|| for k = 0 ... s, rebuilt from the pairs in
    /// Double precision (entry 0 is ||x||).
    public let residualNorms: [Float]
    /// (B, s) after step k: max over atoms n of |corr[n] - <R_k, d_n>|, where corr is the
    /// encoder's Gram-updated correlation row and <R_k, d_n> is recomputed from R_k.
    public let correlationDrift: [Float]
}
