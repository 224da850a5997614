/// The receiver of a KV transfer installed (or, for ``KVTransferMode/measure``, checked
/// and discarded) the session's cache for `layers`.
public struct KVTransferAckBody: Sendable, Equatable {
    public var layers: Range<Int>
    /// Tokens the received cache holds.
    public var tokenCount: Int
    public var mode: KVTransferMode
    /// Bytes of the payload blob.
    public var payloadBytes: UInt64
    /// Bytes of the whole kvTransfer message as the receiver's socket counted it.
    public var wireBytes: UInt64

    public init(layers: Range<Int>, tokenCount: Int, mode: KVTransferMode = .install, payloadBytes: UInt64 = 0,
                wireBytes: UInt64 = 0) {
        self.layers = layers
        self.tokenCount = tokenCount
        self.mode = mode
        self.payloadBytes = payloadBytes
        self.wireBytes = wireBytes
    }
}
