import Foundation

/// Why a model could not be loaded or run.
public enum ModelError: LocalizedError, Sendable, Equatable {
    case unsupportedArchitecture(path: String, architecture: String)
    case badHyperparameter(path: String, name: String, value: String)
    case layerRangeOutOfBounds(requested: Range<Int>, layerCount: Int)
    case layerNotLoaded(layer: Int, loaded: Range<Int>)
    case embeddingsNotLoaded
    case outputHeadNotLoaded
    case tokenOutOfVocabulary(token: Int32, vocabularySize: Int)
    case contextFull(needed: Int, contextLength: Int)
    case hiddenStateShape(expected: Int, found: Int)

    public var errorDescription: String? {
        switch self {
        case .unsupportedArchitecture(let p, let a):
            return "\(p): architecture '\(a)' is not supported (SparseKV runs 'llama' models)."
        case .badHyperparameter(let p, let n, let v):
            return "\(p): hyperparameter \(n) = \(v) is not usable."
        case .layerRangeOutOfBounds(let r, let n):
            return "layer range \(r.lowerBound)..<\(r.upperBound) is outside the model's \(n) layers."
        case .layerNotLoaded(let l, let r):
            return "layer \(l) is not loaded (this model instance holds layers \(r.lowerBound)..<\(r.upperBound))."
        case .embeddingsNotLoaded:
            return "token embeddings are not loaded in this model instance."
        case .outputHeadNotLoaded:
            return "the output norm and LM head are not loaded in this model instance."
        case .tokenOutOfVocabulary(let t, let n):
            return "token id \(t) is outside the vocabulary (size \(n))."
        case .contextFull(let need, let ctx):
            return "the session needs \(need) positions but the context length is \(ctx); use a shorter prompt or fewer tokens."
        case .hiddenStateShape(let e, let f):
            return "hidden-state buffer holds \(f) floats, expected \(e)."
        }
    }
}
