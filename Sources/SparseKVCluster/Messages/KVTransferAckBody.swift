/// The receiver of a KV transfer installed the session's cache for `layers`.
public struct KVTransferAckBody: Sendable, Equatable {
    public var layers: Range<Int>
    /// Tokens the installed cache holds.
    public var tokenCount: Int

    public init(layers: Range<Int>, tokenCount: Int) {
        self.layers = layers
        self.tokenCount = tokenCount
    }
}
