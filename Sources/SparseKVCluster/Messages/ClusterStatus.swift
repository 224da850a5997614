/// What a coordinator adds to its stats reply for clients that serve it (`sparsekv serve
/// --cluster`): whether it takes requests, its settings and its workers. A worker's stats
/// reply carries the empty value.
public struct ClusterStatus: Sendable, Equatable {
    /// The coordinator takes generate requests now: every worker with layers loaded them
    /// and acked the dictionary, no failover or drain holds the sessions back, it is not broken.
    public var serving: Bool
    /// Positions per session (the coordinator's `--ctx`); 0 from a worker.
    public var contextLength: Int
    /// The KV cache spec (`--kv`, e.g. "csr:8,coef=i8"); empty from a worker.
    public var kvSpec: String
    /// The CSR dictionary's content hash; empty without one.
    public var dictionaryHash: String
    /// Registered workers in registration order.
    public var workers: [WorkerStatus]

    public init(serving: Bool = false, contextLength: Int = 0, kvSpec: String = "", dictionaryHash: String = "",
                workers: [WorkerStatus] = []) {
        self.serving = serving
        self.contextLength = contextLength
        self.kvSpec = kvSpec
        self.dictionaryHash = dictionaryHash
        self.workers = workers
    }
}
