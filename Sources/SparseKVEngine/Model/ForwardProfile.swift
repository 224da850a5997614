import Foundation

/// Wall time spent in each part of the forward pass, summed over calls. Pass one to
/// `LlamaModel.forward`/`logits` to find where a decode step goes.
public final class ForwardProfile: @unchecked Sendable {
    public enum Part: String, CaseIterable, Sendable {
        case projections = "matmul: q/k/v/o"
        case ffn = "matmul: ffn gate/up/down"
        case attention = "attention (scores, softmax, values, cache)"
        case elementwise = "norms, rope, swiglu, residual"
        case head = "lm head (final norm + logits)"
        case embedding = "embedding"
    }

    public private(set) var seconds: [Part: Double] = [:]

    public init() {}

    @inline(__always) func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Charges the time since `since` to `part` and returns the current time.
    @inline(__always) @discardableResult
    func lap(_ part: Part, since: UInt64) -> UInt64 {
        let t = now()
        seconds[part, default: 0] += Double(t &- since) / 1e9
        return t
    }

    public var total: Double { seconds.values.reduce(0, +) }

    public func reset() { seconds = [:] }
}
