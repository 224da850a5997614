/// What the receiver of a KV transfer does with it.
public enum KVTransferMode: UInt8, Sendable, Equatable, CustomStringConvertible {
    /// Install the cache as the session's cache for those layers (migration, handoff).
    case install = 0
    /// Decode and check the payload completely, answer, and discard it: the measured
    /// baseline of a transfer (the same KV in dense fp16, say) that the session does not use.
    case measure = 1

    public var description: String { self == .install ? "install" : "measure" }
}
