/// Settings of the coordinator process (`sparsekv coordinator`).
public struct CoordinatorConfiguration: Sendable {
    /// Where the coordinator's ROUTER binds (workers and clients connect here).
    public var listen: String
    /// The GGUF model file (the coordinator loads embeddings, final norm and LM head).
    public var modelPath: String
    /// The CSR dictionary file; required for a csr: cache.
    public var dictionaryPath: String?
    /// Workers to wait for before planning shards.
    public var workerCount: Int
    /// KV cache spec the workers use, as `--kv`.
    public var kvSpec: String = "fp32"
    /// Positions per session (default: the model's context length).
    public var contextLength: Int?
    /// Sessions in flight at once; further requests wait their turn.
    public var maxConcurrentSessions = 4
    /// A session whose states do not come back within this time fails; so does a drain
    /// whose loading or transfers take longer.
    public var stepTimeout: Duration = .seconds(120)
    /// Prefill -> decode handoff: the first `prefillWorkers` workers (in registration
    /// order) form the prefill pipeline, the others the decode pipeline, both with the same
    /// layer split; after a session's prompt its KV moves from each prefill worker to its
    /// decode counterpart. 0 = one pipeline of all workers. Needs workerCount = 2 x this.
    public var prefillWorkers = 0
    /// With a handoff: after the KV moved, send it again in this encoding ("fp16") as a
    /// measured baseline the decode workers check and discard. Empty: no baseline.
    public var handoffBaseline = ""
    /// Replication-style streaming, for measurement: once a session decodes, every worker
    /// on its pipeline sends each decoded token's KV for its layers to a peer (its
    /// counterpart in the other pipeline with a handoff, else the next worker, wrapping
    /// around), which checks, counts and discards it. Only when no replicas are kept
    /// (`replicas`), which stream the same payloads and apply them.
    public var replicate = false
    /// Kept KV replicas per worker: 1 keeps a live replica of every worker's KV on the
    /// next worker of the pipeline (wrapping around), so a failover installs it instead of
    /// recomputing; 0 keeps none. nil: 1 whenever the pipeline has two workers or more
    /// (and the cache is csr, fp32 or fp16, without --prefill-workers).
    public var replicas: Int?
    /// Ping interval and liveness (`--heartbeat-ms`, `--liveness`): a worker silent for
    /// `liveness` intervals is declared dead and its layers fail over.
    public var heartbeat = HeartbeatMonitor.Settings()
    /// CURVE keys and authorized clients (`--keys`), or plaintext (`--insecure`).
    public var security: NodeSecurity = .insecure

    public init(listen: String, modelPath: String, dictionaryPath: String?, workerCount: Int) {
        self.listen = listen
        self.modelPath = modelPath
        self.dictionaryPath = dictionaryPath
        self.workerCount = workerCount
    }
}
