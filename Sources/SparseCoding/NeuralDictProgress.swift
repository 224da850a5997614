/// What NeuralDict training reports after every k-means iteration and every optimisation
/// step (enough for a progress bar and a loss readout).
public struct NeuralDictProgress: Sendable, Equatable {
    /// Which part of training is running.
    public enum Phase: Sendable, Equatable {
        /// Lloyd iteration `iteration` (1-based) of `of` of the k-means initialisation.
        case kmeans(iteration: Int, of: Int)
        /// Gradient steps; ``NeuralDictProgress/step`` counts them.
        case training
    }

    /// Optimisation steps done (0 during k-means).
    public let step: Int
    /// Optimisation steps planned.
    public let totalSteps: Int
    public let phase: Phase
    /// Mean squared error per element: of the minibatch coded at sparsity s before this step,
    /// or during k-means of the k-means sample coded with one atom (the k-means objective).
    public let mse: Double
    /// (1/N^2) ||I - D D^T||_F^2 of the atoms the MSE was measured with.
    public let diversity: Double
    /// The diversity weight this step used: clamp(diversityScale * mse / diversity, 0, 1)
    /// (0 during k-means).
    public let beta: Double
    /// MSE per element of the held-out vectors under the atoms after this step, when they
    /// were evaluated (every ``NeuralDictOptions/evaluateEvery`` steps and the last).
    public let heldOutMSE: Double?
}
