/// Worker -> coordinator: the assigned layers are loaded and the worker takes activations.
public struct ShardReadyBody: Sendable, Equatable {
    /// The layers loaded (the assignment's).
    public var layers: Range<Int>
    /// Bytes of weights the worker holds for them.
    public var weightBytes: UInt64

    public init(layers: Range<Int>, weightBytes: UInt64) {
        self.layers = layers
        self.weightBytes = weightBytes
    }
}
