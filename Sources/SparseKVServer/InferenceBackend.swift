import SparseKVEngine

/// Where completions run: one local process (``LocalBackend``) or a cluster driven by
/// its coordinator (``ClusterBackend``).
public protocol InferenceBackend: Sendable {
    /// The id `GET /v1/models` lists and replies carry.
    var modelName: String { get }
    var tokenizer: BPETokenizer { get }
    /// Positions per session; a prompt must leave room for one generated token.
    var contextLength: Int { get }
    /// Whether tokens given as ids are accepted (a cluster's coordinator takes text only).
    var acceptsTokenPrompts: Bool { get }
    /// nil when requests can run; otherwise why not (model loading, workers missing).
    func notReadyReason() -> String?
    /// Queues a generation. Throws ``APIError/overloaded(queued:)`` when the queue is full.
    func start(_ job: GenerationJob) throws(APIError) -> GenerationHandle
    /// Figures for /metrics, read at scrape time.
    func gauges() -> BackendGauges
    /// Brings ``gauges()`` up to date before a scrape (a cluster served from another
    /// process asks the coordinator for its stats); returns within a few seconds.
    func refreshGauges() async
}

extension InferenceBackend {
    public func refreshGauges() async {}
}
