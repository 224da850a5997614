/// Coordinator -> worker X: send the session's KV for `layers` to `destination`, encoded
/// as `encoding`: the cache's own kind, or "fp16" (dense, any cache converts to it).
public struct KVRequestBody: Sendable, Equatable {
    public var layers: Range<Int>
    /// The receiving worker's peer endpoint.
    public var destination: Endpoint
    public var encoding: String
    /// What the receiver does with it.
    public var mode: KVTransferMode

    public init(layers: Range<Int>, destination: Endpoint, encoding: String, mode: KVTransferMode = .install) {
        self.layers = layers
        self.destination = destination
        self.encoding = encoding
        self.mode = mode
    }
}
