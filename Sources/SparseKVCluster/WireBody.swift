/// The body of a message, one case per ``MessageKind``. Field order and limits are in
/// WireProtocol.swift.
public enum WireBody: Sendable, Equatable {
    /// Worker -> coordinator: a worker announces itself.
    case register(RegisterBody)
    /// Coordinator -> worker: registration accepted; the worker's index in the cluster.
    case registerAck(workerIndex: Int)
    /// Coordinator -> worker: the layers to load and serve, and where their output goes.
    case shardAssignment(ShardAssignmentBody)
    /// Worker -> coordinator: the assigned layers are loaded.
    case shardReady(ShardReadyBody)
    /// Coordinator -> worker: the shared CSR dictionary as a GGUF file.
    case dictionary(DictionaryBody)
    /// Worker -> coordinator: the dictionary with this content hash is loaded and checked.
    case dictionaryAck(contentHash: String)
    /// Hidden states of one session moving along the pipeline.
    case activations(ActivationsBody)
    /// Worker -> worker: a session's KV cache for a layer range.
    case kvTransfer(KVTransferBody)
    /// Receiver of a KV transfer -> sender (and coordinator): the cache is installed.
    case kvTransferAck(KVTransferAckBody)
    /// Coordinator -> worker: send a session's KV for some layers to another endpoint.
    case kvRequest(KVRequestBody)
    /// Coordinator -> worker: forget the session (the header's session id).
    case dropSession
    /// Ask a peer for its byte counters.
    case statsRequest
    /// A peer's byte counters and cache usage.
    case statsReply(StatsReplyBody)
    /// Stop serving and exit.
    case shutdown(reason: String)
    /// A request failed; the request id says which.
    case error(ErrorBody)
    /// Liveness check; the nonce comes back in the pong.
    case ping(nonce: UInt64)
    /// Answer to a ping, echoing its nonce.
    case pong(nonce: UInt64)
    /// Client -> coordinator: generate text from a prompt.
    case generateRequest(GenerateRequestBody)
    /// Coordinator -> client: the generated tokens, text and timings.
    case generateReply(GenerateReplyBody)
    /// Client -> coordinator: drain a worker (move its layers and sessions' KV away).
    case drainRequest(DrainRequestBody)
    /// Coordinator -> client: the drain is done; its transfers.
    case drainReply(DrainReplyBody)
    /// Coordinator -> client: one token of a streamed generate request, as it is sampled.
    case generateToken(Int32)
    /// Client -> coordinator: end the generate request with the header's request id.
    case generateCancel

    public var kind: MessageKind {
        switch self {
        case .register: .register
        case .registerAck: .registerAck
        case .shardAssignment: .shardAssignment
        case .shardReady: .shardReady
        case .dictionary: .dictionary
        case .dictionaryAck: .dictionaryAck
        case .activations: .activations
        case .kvTransfer: .kvTransfer
        case .kvTransferAck: .kvTransferAck
        case .kvRequest: .kvRequest
        case .dropSession: .dropSession
        case .statsRequest: .statsRequest
        case .statsReply: .statsReply
        case .shutdown: .shutdown
        case .error: .error
        case .ping: .ping
        case .pong: .pong
        case .generateRequest: .generateRequest
        case .generateReply: .generateReply
        case .drainRequest: .drainRequest
        case .drainReply: .drainReply
        case .generateToken: .generateToken
        case .generateCancel: .generateCancel
        }
    }
}
