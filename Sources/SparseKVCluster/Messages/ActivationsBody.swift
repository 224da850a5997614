/// Hidden states of one session (the header's session id) entering layer `nextLayer`.
/// A worker runs its layers on them and sends the result on with `nextLayer` set to its
/// end layer; states with `nextLayer` equal to the model's layer count return to the
/// coordinator for the final norm and LM head.
public struct ActivationsBody: Sendable, Equatable {
    /// Header flag: whether the tokens are prompt tokens or generated ones.
    public enum Phase: Sendable, Equatable {
        case prefill
        case decode
    }

    public var phase: Phase
    /// The first layer that should run on these states.
    public var nextLayer: Int
    /// Position of the first token; the caches must hold exactly this many tokens.
    public var startPosition: Int
    public var tokenCount: Int
    /// d_model.
    public var hiddenDim: Int
    /// Bytes the session's KV caches hold on the workers these states passed through, each
    /// worker adding its own after running its layers (0 as the coordinator sends them).
    public var kvBytes: UInt64
    /// The same per worker passed, each appending its own (empty as the coordinator sends them).
    public var kvBytesByWorker: [WorkerKVBytes]
    /// (tokenCount, hiddenDim) fp32, row-major, all finite.
    public var hidden: [Float]

    public init(phase: Phase, nextLayer: Int, startPosition: Int, tokenCount: Int, hiddenDim: Int, kvBytes: UInt64 = 0,
                hidden: [Float], kvBytesByWorker: [WorkerKVBytes] = []) {
        self.kvBytesByWorker = kvBytesByWorker
        self.phase = phase
        self.nextLayer = nextLayer
        self.startPosition = startPosition
        self.tokenCount = tokenCount
        self.hiddenDim = hiddenDim
        self.kvBytes = kvBytes
        self.hidden = hidden
    }
}
