/// Coordinator -> worker: which contiguous layers the worker serves, with which KV cache,
/// and where the hidden states go after its last layer.
public struct ShardAssignmentBody: Sendable, Equatable {
    /// Where a worker sends its output activations.
    public enum NextHop: Sendable, Equatable {
        /// Back to the coordinator (the worker holds the model's last layers).
        case coordinator
        /// To the next worker's peer endpoint.
        case peer(Endpoint)
    }

    /// Layers to load and run, within 0..<modelLayers.
    public var layers: Range<Int>
    /// The model's total layer count, so the worker can check its GGUF file.
    public var modelLayers: Int
    /// KV cache spec as on the command line (`--kv`), e.g. "csr:8" or "fp16".
    public var kvSpec: String
    /// Content hash of the dictionary a CSR spec needs; empty for other specs.
    public var dictionaryHash: String
    /// Positions each session's cache must hold.
    public var contextCapacity: Int
    public var nextHop: NextHop

    public init(layers: Range<Int>, modelLayers: Int, kvSpec: String, dictionaryHash: String = "",
                contextCapacity: Int, nextHop: NextHop) {
        self.layers = layers
        self.modelLayers = modelLayers
        self.kvSpec = kvSpec
        self.dictionaryHash = dictionaryHash
        self.contextCapacity = contextCapacity
        self.nextHop = nextHop
    }
}
