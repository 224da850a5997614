/// Coordinator -> worker X: send the session's KV for `layers` to `destination`, encoded
/// as `encoding` ("csr", or "fp16" for the dense baseline).
public struct KVRequestBody: Sendable, Equatable {
    public var layers: Range<Int>
    /// The receiving worker's peer endpoint.
    public var destination: Endpoint
    public var encoding: String

    public init(layers: Range<Int>, destination: Endpoint, encoding: String) {
        self.layers = layers
        self.destination = destination
        self.encoding = encoding
    }
}
