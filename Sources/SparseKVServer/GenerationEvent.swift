/// What a running generation reports: each token as it is sampled, then a summary.
public enum GenerationEvent: Sendable, Equatable {
    case token(Int32)
    case finished(GenerationSummary)
}
