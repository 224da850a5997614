/// What the receiver of a KV transfer does with it.
public enum KVTransferMode: UInt8, Sendable, Equatable, CustomStringConvertible {
    /// Install the cache as the session's cache for those layers (migration, handoff).
    case install = 0
    /// Decode and check the payload completely, answer, and discard it: the measured
    /// baseline of a transfer (the same KV in dense fp16, say) that the session does not use.
    case measure = 1
    /// Replication-style streaming: in a kvRequest, "from now on send each decoded token's
    /// KV for your layers to the destination"; in a kvTransfer, those tokens' KV (an append
    /// payload, `KVCache.appendPayload`), which the receiver checks, counts and discards
    /// without an ack. It measures what keeping a replica current costs per token.
    case stream = 2
    /// A kept replica: in a kvRequest, "send the session's KV for this segment (`layers`)
    /// to the destination, then stream each decoded token's KV there"; in a kvTransfer,
    /// that KV, which the receiver keeps as a replica (acked to the coordinator) and keeps
    /// current with the stream's append payloads. A failover installs it in place of the
    /// dead worker's cache.
    case replica = 3

    public var description: String {
        switch self {
        case .install: "install"
        case .measure: "measure"
        case .stream: "stream"
        case .replica: "replica"
        }
    }
}
