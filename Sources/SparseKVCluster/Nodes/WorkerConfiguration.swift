/// Settings of one worker process (`sparsekv worker`).
public struct WorkerConfiguration: Sendable {
    /// The coordinator's ROUTER endpoint, e.g. tcp://127.0.0.1:5555.
    public var coordinator: String
    /// The worker's local GGUF model file.
    public var modelPath: String
    /// Bytes the worker may use for weights, caches and the dictionary.
    public var memoryBudgetBytes: UInt64
    /// Where this worker binds its ROUTER; a `:0` or `:*` port picks a free one.
    public var listen: String
    /// The endpoint peers connect to, when it differs from the bound one (a container's
    /// service name, a namespace's address); nil announces the bound endpoint.
    public var advertise: String?
    /// Unique worker id, also its ZeroMQ routing id.
    public var id: String
    /// How long to wait for the coordinator to answer the registration.
    public var registrationTimeout: Duration = .seconds(60)
    /// Directory for the received dictionary file.
    public var temporaryDirectory: String = "/tmp"
    /// The coordinator's ping interval and liveness (`--heartbeat-ms`, `--liveness`; give
    /// the coordinator's values): with no ping for that long, the worker exits.
    public var heartbeat = HeartbeatMonitor.Settings()
    /// CURVE keys and authorized peers (`--keys`), or plaintext (`--insecure`).
    public var security: NodeSecurity = .insecure

    public init(coordinator: String, modelPath: String, memoryBudgetBytes: UInt64, listen: String, id: String) {
        self.coordinator = coordinator
        self.modelPath = modelPath
        self.memoryBudgetBytes = memoryBudgetBytes
        self.listen = listen
        self.id = id
    }
}

/// Peer label and routing id the coordinator uses on its links to workers.
public let coordinatorPeerID = "coordinator"

/// libzmq binds an ephemeral port for `*`; `:0` is accepted as the common spelling of it.
func bindableEndpoint(_ s: String) -> String {
    s.hasSuffix(":0") ? String(s.dropLast()) + "*" : s
}
