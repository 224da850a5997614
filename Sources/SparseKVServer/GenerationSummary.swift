import SparseKVCluster

/// The end of a generation: why it stopped, counts, timings and the SparseKV figures
/// (the `sparsekv` object of a reply).
public struct GenerationSummary: Sendable, Equatable, Encodable {
    /// "eos", "length" (token budget), "context" (context full) or "cancelled".
    public var stopReason: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    /// The KV cache type ("fp32", "csr:8,coef=i8", ...).
    public var kvCache: String
    /// Bytes the session's KV cache held at the end, over all workers.
    public var kvCacheBytes: UInt64
    /// Workers that held the session's layers (0 in a single process).
    public var workers: Int
    /// Hidden-state bytes the coordinator sent into and received from the pipeline for
    /// this session (0 in a single process).
    public var activationBytesSent: UInt64
    public var activationBytesReceived: UInt64
    /// KV bytes moved between workers for this session (a handoff, a drain).
    public var kvTransferBytes: UInt64
    /// The session's KV bytes on each worker at the end, in pipeline order, as the workers
    /// reported them (empty in a single process).
    public var kvBytesByWorker: [WorkerKVBytes]

    public init(stopReason: String, promptTokens: Int, completionTokens: Int, prefillSeconds: Double, decodeSeconds: Double,
                kvCache: String, kvCacheBytes: UInt64, workers: Int = 0, activationBytesSent: UInt64 = 0,
                activationBytesReceived: UInt64 = 0, kvTransferBytes: UInt64 = 0,
                kvBytesByWorker: [WorkerKVBytes] = []) {
        self.kvBytesByWorker = kvBytesByWorker
        self.stopReason = stopReason
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.prefillSeconds = prefillSeconds
        self.decodeSeconds = decodeSeconds
        self.kvCache = kvCache
        self.kvCacheBytes = kvCacheBytes
        self.workers = workers
        self.activationBytesSent = activationBytesSent
        self.activationBytesReceived = activationBytesReceived
        self.kvTransferBytes = kvTransferBytes
    }

    enum CodingKeys: String, CodingKey {
        case stopReason = "stop_reason", promptTokens = "prompt_tokens", completionTokens = "completion_tokens"
        case prefillSeconds = "prefill_seconds", decodeSeconds = "decode_seconds", kvCache = "kv_cache"
        case kvCacheBytes = "kv_cache_bytes", workers, activationBytesSent = "activation_bytes_sent"
        case activationBytesReceived = "activation_bytes_received", kvTransferBytes = "kv_transfer_bytes"
    }
}
