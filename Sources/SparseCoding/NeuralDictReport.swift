/// How well a trained dictionary codes its training and held-out vectors, before and after
/// the gradient steps. Errors are measured with Matching Pursuit at the training sparsity
/// over the whole of each set.
public struct NeuralDictReport: Sendable, Codable, Equatable {
    /// Mean squared error per element, sum ||x - x^||^2 / (vectors * m), of the returned
    /// dictionary on the training vectors.
    public let trainMSE: Double
    /// The same on the held-out vectors.
    public let testMSE: Double
    /// MSE per element of the k-means dictionary (before any gradient step), training vectors.
    public let initialTrainMSE: Double
    /// The same on the held-out vectors.
    public let initialTestMSE: Double
    /// sum ||x - x^||^2 / sum ||x||^2 of the returned dictionary on the training vectors.
    public let trainRelativeError: Double
    /// The same on the held-out vectors.
    public let testRelativeError: Double
    /// Relative error of the k-means dictionary on the held-out vectors.
    public let initialTestRelativeError: Double
    /// Vectors trained on and held out; together, every input vector once.
    public let trainCount: Int
    public let testCount: Int
    /// Optimisation steps run.
    public let steps: Int
    /// The step whose dictionary was returned: `steps` unless ``NeuralDictOptions/keepBestHeldOut``
    /// chose an earlier one (0 is the k-means dictionary).
    public let selectedStep: Int
    /// Atoms replaced during training (see ``NeuralDictOptions/replaceAtoms``), counting an
    /// atom again each time it is replaced.
    public let replacedAtoms: Int
    /// Wall time of the whole training, measurements included.
    public let seconds: Double
}
