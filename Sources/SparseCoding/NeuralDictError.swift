import Foundation

/// Why NeuralDict training (or measuring a dictionary's coding error) failed. Every case
/// carries the values that were wrong, so the message tells the caller what to change.
public enum NeuralDictError: LocalizedError, Sendable, Equatable {
    // MARK: - Options
    case badAtomCount(atomCount: Int, limit: Int)
    case badSparsity(sparsity: Int, limit: Int)
    case badOption(name: String, value: String, expected: String)

    // MARK: - Training data
    case badVectorShape(elements: Int, count: Int, dimension: Int)
    case dimensionMismatch(vectors: Int, dictionary: Int)
    case nonFiniteInput(vector: Int, element: Int)
    case tooFewVectors(count: Int, heldOut: Int, atomCount: Int)
    case tooFewNonZeroVectors(found: Int, sampled: Int, atomCount: Int)

    // MARK: - Optimisation
    case diverged(step: Int, mse: Double, diversity: Double)

    public var errorDescription: String? {
        switch self {
        case .badAtomCount(let n, let l):
            return "cannot train \(n) atoms: the atom count must be between 1 and \(l) "
                + "(code indices are 16-bit). Use fewer atoms."
        case .badSparsity(let s, let l):
            return "cannot train at sparsity \(s): it must be between 1 and \(l) pairs per vector."
        case .badOption(let name, let value, let expected):
            return "NeuralDict option \(name) is \(value); it must be \(expected)."
        case .badVectorShape(let e, let c, let m):
            return "\(c) vectors of dimension \(m) need \(c) x \(m) values, got \(e). "
                + "Vectors are stored (count, dimension) row-major; count and dimension must be at least 1."
        case .dimensionMismatch(let v, let d):
            return "vectors have dimension \(v) but the dictionary's atoms have dimension \(d)."
        case .nonFiniteInput(let v, let e):
            return "training vector \(v) holds NaN or infinity at element \(e). Remove or repair it before training."
        case .tooFewVectors(let c, let h, let n):
            return "\(n) atoms need at least \(n) training vectors, but of \(c) vectors \(h) are held out, "
                + "leaving \(c - h). Collect more vectors, train fewer atoms or lower heldOutFraction."
        case .tooFewNonZeroVectors(let f, let s, let n):
            return "k-means needs \(n) non-zero vectors to seed \(n) atoms, but its sample of \(s) training "
                + "vectors holds only \(f). Remove zero vectors, collect more or train fewer atoms."
        case .diverged(let step, let mse, let div):
            return "training diverged at step \(step) (MSE \(mse), diversity loss \(div)): the atoms became "
                + "NaN or infinite. Lower learningRate."
        }
    }
}
